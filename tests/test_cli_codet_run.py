"""`codedpo run` on CodeT-shaped sample files (the acceptance of issue 11's import): every
problem with samples is imported, a test sample continuing CodeT's `assert ` prompt keeps its
first assert, and the samples the import dropped are counted by reason in the report, in
import_summary.json and at the end of the CLI output, with one loud line over a tenth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from codedpo.components.common.jsonl import read_records
from codedpo.components.common.records import PairRecord, SampleSet
from codedpo.pipelines.cli import app

ADD = 'def add(a, b):\n    """Return a + b."""\n'
NEG = 'def neg(x):\n    """Return -x."""\n'
TWICE = 'def twice(s):\n    """Return s repeated twice."""\n'
LONELY = 'def lonely():\n    """No sample names this problem."""\n'


def _test_prompt(prompt: str, name: str) -> str:
    """CodeT's test-generation prompt: the problem, a placeholder body, then `assert`."""
    return f"{prompt}    pass\n\n# check the correctness of {name}\nassert"


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path.name


@pytest.mark.sandbox
def test_codedpo_run_on_codet_files_imports_every_problem_and_shows_its_losses(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    problems = [{"task_id": f"T/{i}", "prompt": prompt, "entry_point": name}
                for i, (prompt, name) in enumerate([(ADD, "add"), (NEG, "neg"), (TWICE, "twice"), (LONELY, "lonely")])]
    codes = [
        {"prompt": ADD, "samples": ["    return a + b\n", "    return a + b\n\nprint(add(1, 2))\n", "    return a - b\n"]},
        {"prompt": NEG, "samples": ["    return -x\n", "    return x\n"]},
        {"prompt": TWICE, "samples": ["    return s * 2\n"]},
        {"prompt": "def unknown():\n", "samples": ["    pass\n"]},
    ]
    tests = [
        # each sample continues the prompt's `assert `: its first assert is " add(1, 2) == 3"
        {"prompt": _test_prompt(ADD, "add"), "samples": [" add(1, 2) == 3\nassert add(2, 2) == 4\n", " add(0, 0) == 0\n"]},
        {"prompt": _test_prompt(NEG, "neg"), "samples": [" neg(1) == -1\n", " I am not sure what neg does\n"]},
        {"prompt": _test_prompt(TWICE, "twice"), "samples": [" sorry, no tests\n"]},
    ]
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({
        "run_name": "codet-files",
        "output_dir": "runs",
        "samples": {"format": "codet", "problems_path": _write(tmp_path / "problems.jsonl", problems),
                    "path": _write(tmp_path / "codes.jsonl", codes), "tests_path": _write(tmp_path / "tests.jsonl", tests)},
        "execute": {"sandbox": "runsc", "cache_dir": str(tmp_path / "cache")},
        "pairs": {"efficiency": False},
    }))

    result = CliRunner().invoke(app, ["run", "--config", "run.yaml"])

    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "codet-files"
    samples = {s.problem_id: s for s in read_records(run_dir / "samples.jsonl", SampleSet)}
    assert sorted(samples) == ["T/0", "T/1"]  # T/2 has no usable test, T/3 no sample at all
    assert [t.text for t in samples["T/0"].tests] == ["assert add(1, 2) == 3", "assert add(2, 2) == 4",
                                                      "assert add(0, 0) == 0"]
    assert [t.text for t in samples["T/1"].tests] == ["assert neg(1) == -1"]
    # read: 6 codes + 5 tests of known problems + 1 unknown; dropped: 2 tests without an assert,
    # twice's code (its problem has no usable test), the unknown prompt's sample
    summary = json.loads((run_dir / "import_summary.json").read_text())
    assert summary["samples_read"] == 12
    assert summary["dropped"] == {"test_without_usable_assert": 2, "sample_of_unknown_task": 1,
                                  "code_of_problem_without_tests": 1, "test_of_problem_without_codes": 0}
    lines = result.stdout.splitlines()
    assert ("import: 2 problems imported, 3 skipped; dropped 4 of 12 samples read (test_without_usable_assert 2, "
            "code_of_problem_without_tests 1, sample_of_unknown_task 1)") in lines
    assert any(line.startswith("WARNING: the import dropped 4 of 12 samples (33.3 %") for line in lines)
    report = (run_dir / "report.md").read_text()
    assert "## Import" in report and "test_without_usable_assert" in report and "WARNING" in report
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["import_dropped_total"] == 4 and metrics["import_samples_read"] == 12
    pairs = read_records(run_dir / "pairs.jsonl", PairRecord)
    assert {(p.problem_id, p.kind) for p in pairs} <= {("T/0", "correctness"), ("T/1", "correctness")}
