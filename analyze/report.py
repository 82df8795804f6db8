"""Writes a report folder for a sweep, an ensemble or any folder of runs.

    python -m analyze.report runs/<sweep> [--metric=eval/nelbo] [--out=DIR] [--stat=final]
                                          [--by=loss.beta,optimizer.learning_rate]

Without --metric the report uses the loss's main eval metric (eval/accuracy, eval/nelbo...) and
says so. The folder (default <runs>/report) gets report.md, groups.csv, comparisons.csv and the
PNGs report.md links. Exit status 2 on bad input (one line naming it).
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
    best = report.groups.iloc[0]
    print(f"best: {best['group']}: mean {best['mean']:.6g}, 95% CI [{best['ci_low']:.6g}, "
          f"{best['ci_high']:.6g}], n={best['n']}")
  print(f"report: {report.markdown} ({len(report.figures)} figures)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
