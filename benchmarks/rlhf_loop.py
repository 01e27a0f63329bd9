"""The RLHF loop end to end (examples/rlhf/run.py): warm start, a scripted annotator with a hidden
preference judging over HTTP on the real feedback server, a reward model, PPO against it with a KL
penalty. About 5 minutes on 2 CPU cores.

    python benchmarks/rlhf_loop.py [--out runs/bench_rlhf]

The last line is one JSON object with rm_pairwise_accuracy, rm_score_before/after,
true_score_before/after (the hidden preference's utility of the policy's sampled reviews of the
held-out prompts), accuracy_before/after (share of wholly positive reviews), malformed_before/after,
the final KL, counts and stage timings. Figures: docs/rlhf.md.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    spec = importlib.util.spec_from_file_location("rlhf_example", ROOT / "examples" / "rlhf" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = sys.argv[1:]
    if "--out" not in argv:
        out = Path(tempfile.mkdtemp(prefix="rlft-rlhf-"))
        shutil.rmtree(out)
        argv = [*argv, "--out", str(out)]
    module.main(argv)


if __name__ == "__main__":
    main()
