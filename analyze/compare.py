"""Compares one metric between two folders of runs (two sweeps, ensembles or settings).

    python -m analyze.compare DIR_A DIR_B [--metric=eval/accuracy] [--stat=final]

Prints b - a with its 95% bootstrap interval, paired tests when the two share seeds (else
Welch's t-test and Mann-Whitney U), Hedges' g, the probability of improvement and warnings in
plain words; where no difference is clear, about how many seeds per group would detect the
observed one with 80% power. Exit status 2 on bad input (one line naming it).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m analyze.compare", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("a", help="the first folder of runs (the baseline)")
  parser.add_argument("b", help="the second folder of runs")
  parser.add_argument("--metric", help="the metric (default: the loss's main eval metric)")
  parser.add_argument("--stat", default="final", help="final | best | min | max | auc")
  args = parser.parse_args(argv)
  from gmf_jax.analysis import compare, load_runs, main_metric

  try:
    a, b = load_runs(args.a), load_runs(args.b)
    for folder, runs in ((args.a, a), (args.b, b)):
      if runs.empty:
        raise ValueError(f"no run folders at or below {folder}")
    metric = args.metric or main_metric(a)[0]
    comparison = compare(None, metric, a, b, stat=args.stat)
  except (ValueError, OSError) as e:  # bad input or an unwritable --out: one line
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"a = {args.a}\nb = {args.b}")
  print(comparison)
  return 0


if __name__ == "__main__":
  sys.exit(main())
