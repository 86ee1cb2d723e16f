#!/usr/bin/env python
"""Merge augmentation-experiment results that ran the same protocol with different seeds.

Seeds of one protocol can run as separate processes (or machines) in parallel, then count as one result::

    python bench/augmentation_experiment.py ... --seeds 0,1,2,3 --out runs/aug/a
    python bench/augmentation_experiment.py ... --seeds 4,5 --out runs/aug/b
    python bench/augmentation_merge.py runs/aug/a.json runs/aug/b.json --out bench/results/augmentation_cpu_600

Results that differ in anything but their seeds (data, model, device type, setup, arms) are refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "results", nargs="+", type=Path, help="the .json files bench/augmentation_experiment.py wrote"
    )
    p.add_argument("--out", required=True, type=Path, help="results base path (.json and .md are written)")
    args = p.parse_args(argv)

    from geodiff.errors import GeodiffError
    from geodiff.evaluate.experiment import merge_results, results_markdown, write_results

    parts = []
    for path in args.results:
        try:
            parts.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"augmentation_merge: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    try:
        merged = merge_results(parts)
    except GeodiffError as exc:
        print(f"augmentation_merge: {exc}", file=sys.stderr)
        return 2
    paths = write_results(merged, args.out)
    print(results_markdown(merged))
    print("wrote", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
