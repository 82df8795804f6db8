"""Writes a report folder for a sweep, an ensemble or any folder of runs.

    python -m analyze.report runs/<sweep> [--metric=eval/nelbo] [--out=DIR] [--stat=final]
                                          [--by=loss.beta,optimizer.learning_rate]

Without --metric the report uses the loss's main eval metric (eval/accuracy, eval/nelbo...) and
says so. It names a best setting only among groups of two or more runs (one run has no
interval), and ranks runs of different datasets or losses apart. The folder (default
<runs>/report) gets report.md, groups.csv, comparisons.csv and the PNGs report.md links. Exit
status 2 on bad input, such as an --out that names a file (one line naming it).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m analyze.report", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("path", help="a sweep folder, an ensemble, or any folder of runs")
  parser.add_argument("--metric", help="the metric to judge by (default: the loss's main one)")
  parser.add_argument("--out", help="the report folder (default: <path>/report)")
  parser.add_argument("--stat", default="final", help="final | best | min | max | auc")
  parser.add_argument("--by", help="comma-separated config keys to group by")
  args = parser.parse_args(argv)
  from gmf_jax.analysis.report import write_report

  try:
    report = write_report(args.path, metric=args.metric, out=args.out, stat=args.stat,
                          by=args.by.split(",") if args.by else None)
  except (ValueError, OSError) as e:  # bad input or an unwritable --out: one line
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"metric: {report.metric} ({report.metric_reason})")
  if not report.groups.empty:
    _print_best(report)
  print(f"report: {report.markdown} ({len(report.figures)} figures)")
  return 0


def _print_best(report) -> None:
  """The best setting (of each dataset and loss), or why none is named."""
  if not report.best:
    print("best: none: no group has two runs with a value, and one run has no interval "
          "(run more seeds)")
  rows = report.groups.set_index("group")
  for label in report.best:
    best = rows.loc[label]
    print(f"best: {label}: mean {best['mean']:.6g}, 95% CI [{best['ci_low']:.6g}, "
          f"{best['ci_high']:.6g}], n={best['n']}")


if __name__ == "__main__":
  sys.exit(main())
