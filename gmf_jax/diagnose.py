"""Backfill: run diagnostics later on the saved checkpoints of a run.

    python -m gmf_jax.diagnose --workdir=runs/<run> --diagnostics=jacobian,hessian [--steps=all]

writes the same files and `diag/<name>/<key>` rows of metrics.csv as if the diagnostics had run
during training at those steps (same probe, same random keys). A diagnostic that already ran at
a step (during training or in an earlier backfill) is replaced there: its rows and files at that
step are the new ones, and metrics.csv never holds a (step, name) twice. summary.json's final and
best values of the rewritten metrics follow. `--steps` is `all` (every kept checkpoint, the
default), `latest`, or a comma-separated list of steps. wandb is not touched: a wandb run cannot
take rows at steps it has passed.
"""

from __future__ import annotations

import os
import sys

import ml_collections

from gmf_jax.errors import ConfigError
from gmf_jax.runlog.files import read_json
from gmf_jax.runlog.liveness import liveness


def diagnose(workdir: str, names: list[str] | None = None,
             steps: str | list[int] = "all") -> dict[int, list[str]]:
  """Runs diagnostics on a finished (or stopped) run's checkpoints.

  Args:
    workdir: the run folder (relative to the working directory, or absolute).
    names: diagnostics to run (the run's own config entries where it has them, else defaults);
      None runs every diagnostic in the run's config.
    steps: 'all', 'latest' or a list of checkpoint steps.

  Returns:
    The diagnostics run at each step.
  """
  from gmf_jax import compile_cache
  from gmf_jax.config import default_config
  from gmf_jax.diagnostics import DIAGNOSTICS, runner
  from gmf_jax.members import with_member_axis
  from gmf_jax.runlog.checkpoint import Checkpointer
  from gmf_jax.runlog.population import member_steps, restore_from_population
  from gmf_jax.runlog.writers import RowBuffer
  from gmf_jax.train.build import abstract_state, build_experiment
  from gmf_jax.train.step import make_keys

  given, workdir = workdir, os.path.abspath(workdir)  # orbax takes absolute paths only
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise ConfigError(f"--workdir={given} holds no config.json: not a gmf_jax run.")
  saved = read_json(config_path)
  try:
    status, why = liveness(read_json(os.path.join(workdir, "metadata.json")))
  except (OSError, ValueError):  # lost or torn: no live run can be shown to own the folder
    status, why = "unknown", ""
  if status == "running":  # its metrics.csv has a writer already; rows would interleave
    raise ConfigError(f"--workdir={workdir} is a live run ({why}); run diagnostics on it once "
                      "it has ended.")
  entries = saved.get("diagnostics", {})
  if names:
    for name in names:
      if name not in entries and name not in DIAGNOSTICS:
        raise ConfigError(
            f"--diagnostics: {name!r} is neither in this run's config nor built in; built-ins: "
            f"{', '.join(sorted(DIAGNOSTICS))}.")
    entries = {name: entries.get(name, {}) for name in names}
  if not entries:
    raise ConfigError("no diagnostics to run: pass --diagnostics=name,name "
                      f"(built-ins: {', '.join(sorted(DIAGNOSTICS))}).")
  saved["diagnostics"] = entries
  config = ml_collections.ConfigDict(saved)
  exp = build_experiment(config)
  compile_cache.enable(config.get("compile_cache", default_config().compile_cache))
  checkpointer = Checkpointer(workdir, max_to_keep=config.checkpoint.max_to_keep,
                              async_save=False)
  try:
    own = checkpointer.steps()
    available = member_steps(workdir, own)  # a sweep member's are in its population's
    chosen = _choose_steps(steps, available, workdir)
    keys = make_keys(config.seed)
    like = abstract_state(exp, keys)
    # The run alone, as a population of one (a sweep member too): what training ran, bitwise.
    diagnostics = runner.PopulationDiagnostics(
        list(exp.diagnostics), runner.probe_batch(exp, config.probe_size), keys.diag[None],
        draw=True)
    names = [d.name for d in exp.diagnostics]
    done = {}
    for step in chosen:
      if step in own:
        state, _ = checkpointer.restore(step, like)
      else:
        state = restore_from_population(workdir, like, step)[1]
      for name in names:  # a rerun replaces what ran at this step before
        runner.remove_outputs(workdir, name, step)
      rows = RowBuffer()
      diagnostics.run(step, with_member_axis(state), [runner.Target(0, workdir, rows)],
                      force=True)
      replace_rows(workdir, step, [f"diag/{n}/" for n in names], rows)
      done[step] = names
  finally:
    checkpointer.close()
  return done


def replace_rows(workdir: str, step: int, prefixes: list[str], rows) -> None:
  """Puts `rows` (of `step`) into the run's metrics.csv in place of the rows of that step whose
  names start with one of `prefixes`, and brings summary.json's entries of those names up to
  date (final and best are replayed from the rewritten file)."""
  from gmf_jax.runlog.resume import summary_from_rows
  from gmf_jax.runlog.summary import Summary
  from gmf_jax.runlog.writers import rewrite_metrics

  prefixes = tuple(prefixes)
  path = os.path.join(workdir, "metrics.csv")
  kept = rewrite_metrics(path, step, lambda name: name.startswith(prefixes), rows.rows)
  summary_path = os.path.join(workdir, "summary.json")
  if not os.path.exists(summary_path):
    return
  try:
    saved = read_json(summary_path)
  except (OSError, ValueError):  # torn: analysis reads metrics.csv instead; leave it be
    return
  replayed = Summary(summary_path)
  summary_from_rows(replayed, sorted((r for r in kept if r["name"].startswith(prefixes)),
                                     key=lambda r: int(r["step"])))  # final: the last step's
  metrics = {k: v for k, v in saved.get("metrics", {}).items() if not k.startswith(prefixes)}
  replayed.info = {k: v for k, v in saved.items() if k != "metrics"}
  replayed.metrics = {**metrics, **replayed.metrics}
  replayed.save()


def _choose_steps(steps, available: list[int], workdir: str) -> list[int]:
  if not available:
    raise ConfigError(f"--workdir={workdir} has no checkpoints to run diagnostics on.")
  if steps == "all":
    return available
  if steps == "latest":
    return available[-1:]
  missing = [s for s in steps if s not in available]
  if missing:
    raise ConfigError(f"--steps: no checkpoint at {missing}; saved steps: {available}.")
  return list(steps)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  workdir, names, steps = None, None, "all"
  try:
    for arg in argv:
      key, _, value = arg.partition("=")
      if key == "--workdir":
        workdir = value
      elif key == "--diagnostics":
        names = [n for n in value.split(",") if n]
      elif key == "--steps":
        steps = value if value in ("all", "latest") else [int(s) for s in value.split(",")]
      elif key in ("-h", "--help"):
        print(__doc__)
        return 0
      else:
        raise ConfigError(f"unknown argument {arg!r}; see --help.")
    if not workdir:
      raise ConfigError("--workdir=runs/<run> is required.")
    done = diagnose(workdir, names, steps)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except ValueError as e:
    print(f"error: --steps: {e}", file=sys.stderr)
    return 2
  for step, ran in done.items():
    print(f"step {step}: {', '.join(ran)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
