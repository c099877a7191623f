"""`python -m codedpo.components.seeds`: the command that reports a seed collection."""

from __future__ import annotations

from codedpo.components.common.jsonl import read_records
from codedpo.components.seeds import Seed
from codedpo.components.seeds.__main__ import main

CODE = '''import math


def hypot(a, b):
    """Length of the hypotenuse."""
    return math.sqrt(a * a + b * b)
'''


def test_folder_summary_and_out_file(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "geo.py").write_text(CODE)
    out = tmp_path / "seeds.jsonl"
    assert main([str(tmp_path / "src"), "--out", str(out)]) == 0
    assert "1 files (0 dropped: none); 1 snippets found, 1 kept" in capsys.readouterr().out
    (seed,) = read_records(out, Seed)
    assert seed.name == "hypot" and seed.code.startswith("import math")


def test_empty_folder_is_one_error_line_and_status_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: seed folder ") and "no .py files found" in err
