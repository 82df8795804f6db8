"""Backfill: run diagnostics later on the saved checkpoints of a run or a sweep.

    python -m gmf_jax.diagnose --workdir=runs/<run> --diagnostics=jacobian,hessian [--steps=all]
    python -m gmf_jax.diagnose --workdir=runs/<sweep> --diagnostics=cka,mode_connectivity,ensemble

On a sweep's folder (or a seed ensemble's), the diagnostics across members (cka,
mode_connectivity, ensemble) run on each population's checkpoints (`populations/<id>`, every
population of more than one member) and write where they write during training: that folder's
`diagnostics/<name>/` and metrics.csv; any other diagnostic named runs on every member's folder
as on a single run.

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
  from gmf_jax.diagnostics import runner
  from gmf_jax.members import with_member_axis
  from gmf_jax.runlog.checkpoint import Checkpointer
  from gmf_jax.runlog.population import member_steps, restore_from_population
  from gmf_jax.runlog.writers import RowBuffer
  from gmf_jax.train.build import abstract_state, build_experiment
  from gmf_jax.train.step import make_keys

  given, workdir = workdir, os.path.abspath(workdir)  # orbax takes absolute paths only
  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path) and os.path.exists(os.path.join(workdir, "sweep.json")):
    return diagnose_sweep(workdir, names, steps)
  if not os.path.exists(config_path):
    raise ConfigError(f"--workdir={given} holds no config.json: not a gmf_jax run (nor a "
                      "sweep: no sweep.json).")
  saved = read_json(config_path)
  status, why = _status(workdir)
  if status == "running":  # its metrics.csv has a writer already; rows would interleave
    raise ConfigError(f"--workdir={workdir} is a live run ({why}); run diagnostics on it once "
                      "it has ended.")
  entries = saved.get("diagnostics", {})
  from gmf_jax.diagnostics import across_members
  across = across_members({n: entries.get(n, {}) for n in names or entries})
  if names and across:
    raise ConfigError(f"--diagnostics: {across[0]} compares the members of a population; pass "
                      "the sweep's folder (the parent of this member's) as --workdir.")
  if not names:  # a member's own config may hold them: they run on its sweep's folder
    entries = {n: e for n, e in entries.items() if n not in across}
  entries = _chosen(entries, names, "this run's config")
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


def diagnose_sweep(workdir: str, names: list[str] | None = None,
                   steps: str | list[int] = "all") -> dict[str, dict[int, list[str]]]:
  """`diagnose` on a sweep's folder: the diagnostics across members on each population's
  checkpoints, the others on each member's folder. Returns {population or member folder
  name: {step: diagnostics run}}."""
  from gmf_jax.diagnostics import across_members

  members = sorted(e.name for e in os.scandir(workdir)
                   if e.is_dir() and os.path.exists(os.path.join(e.path, "config.json")))
  if not members:
    raise ConfigError(f"--workdir={workdir}: a sweep folder without member runs.")
  for name in members:
    status, why = _status(os.path.join(workdir, name))
    if status == "running":
      raise ConfigError(f"--workdir={workdir}: member {name} is live ({why}); run diagnostics "
                        "on the sweep once it has ended.")
  configs = {m: read_json(os.path.join(workdir, m, "config.json")) for m in members}
  entries = {}
  for config in configs.values():
    entries.update({k: v for k, v in config.get("diagnostics", {}).items() if k not in entries})
  entries = _chosen(entries, names, "this sweep's configs")
  across = across_members(entries)
  populations = _populations(workdir)
  if across:  # on the devices training used (one CPU device per core where it split members)
    from gmf_jax import cpu_devices

    cpu_devices.spread([len(names) for names in populations.values()],
                       [configs[m].get("mesh", {}) for m in members])
  done = {}
  for population, names in populations.items():
    got = _diagnose_population(workdir, population, names, {n: entries[n] for n in across},
                               configs, steps)
    if got:
      done[os.path.relpath(population, workdir)] = got
  if across and not done:
    raise ConfigError(f"--workdir={workdir}: no population of more than one member has "
                      f"checkpoints to run {', '.join(across)} on.")
  others = [n for n in entries if n not in across]
  if others:
    for name in members:
      done[name] = diagnose(os.path.join(workdir, name), others, steps)
  return done


def _chosen(entries: dict, names: list[str] | None, where: str) -> dict:
  """The config entries of the diagnostics `names` (None: all of `entries`); a name neither
  configured nor built in, or nothing to run, is a ConfigError."""
  from gmf_jax.diagnostics import DIAGNOSTICS

  if names:
    for name in names:
      if name not in entries and name not in DIAGNOSTICS:
        raise ConfigError(f"--diagnostics: {name!r} is neither in {where} nor built in; "
                          f"built-ins: {', '.join(sorted(DIAGNOSTICS))}.")
    entries = {name: entries.get(name, {}) for name in names}
  if not entries:
    raise ConfigError("no diagnostics to run: pass --diagnostics=name,name "
                      f"(built-ins: {', '.join(sorted(DIAGNOSTICS))}).")
  return entries


def _status(folder: str) -> tuple[str, str]:
  try:
    return liveness(read_json(os.path.join(folder, "metadata.json")))
  except (OSError, ValueError):  # lost or torn: no live run can be shown to own the folder
    return "unknown", ""


def _populations(workdir: str) -> dict[str, list[str]]:
  """The sweep's population folders of more than one member, in name order: {folder: the
  members' names}."""
  from gmf_jax.runlog.population import POINTER

  root = os.path.join(workdir, "populations")
  found = {}
  for entry in sorted(os.scandir(root), key=lambda e: e.name) if os.path.isdir(root) else []:
    pointer = os.path.join(entry.path, POINTER)
    names = read_json(pointer).get("members", []) if os.path.exists(pointer) else []
    if entry.is_dir() and len(names) > 1:
      found[entry.path] = names
  return found


def _diagnose_population(workdir: str, folder: str, names: list[str], entries: dict,
                         configs: dict, steps) -> dict[int, list[str]]:
  """The diagnostics across members `entries` on one population's checkpoints, written in its
  folder as during training (same probe, same keys, the same program on the saved state)."""
  from gmf_jax import compile_cache
  from gmf_jax.config import default_config
  from gmf_jax.diagnostics import runner
  from gmf_jax.runlog.checkpoint import Checkpointer
  from gmf_jax.train.build import build_experiment, init_population
  from gmf_jax.train.loop import _stack
  from gmf_jax.train.step import make_keys

  missing = [n for n in names if n not in configs]
  if missing:
    raise ConfigError(f"population {folder}: member folder {missing[0]} is missing from "
                      f"{workdir}.")
  saved = dict(configs[names[0]])
  saved["diagnostics"] = entries
  config = ml_collections.ConfigDict(saved)
  exp = build_experiment(config, population=len(names))
  compile_cache.enable(config.get("compile_cache", default_config().compile_cache))
  keys = _stack([make_keys(configs[n]["seed"], configs[n].get("data_seed")) for n in names])
  # A restore target laid out as training laid the population out (its devices, its split).
  like, keys = exp.layout.put_population(
      init_population(exp, keys, _stack([exp.hparams] * len(names))), keys)
  diagnostics = runner.PopulationDiagnostics(
      list(exp.diagnostics), runner.probe_batch(exp, config.probe_size), keys.diag, draw=True)
  target = runner.population_target(folder)
  checkpointer = Checkpointer(folder, max_to_keep=config.checkpoint.max_to_keep,
                              async_save=False)
  done = {}
  try:
    available = checkpointer.steps()
    if not available:
      return done
    for step in _choose_steps(steps, available, folder):
      state, _ = checkpointer.restore(step, like)
      diagnostics.run(step, state, [], force=True, population=target)
      done[step] = list(entries)
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


def _steps_listed(value: str) -> list[int]:
  try:
    return [int(s) for s in value.split(",")]
  except ValueError:
    raise ConfigError(f"--steps={value}: give all, latest, or steps such as 2000,4000.") from None


def main(argv: list[str] | None = None) -> int:
  from gmf_jax import cpu_devices

  cpu_devices.allow()  # a sweep's populations restore on the devices they trained on
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
        steps = value if value in ("all", "latest") else _steps_listed(value)
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
  for key, ran in done.items():
    if isinstance(ran, dict):  # a sweep: per population or member folder
      for step, names in ran.items():
        print(f"{key} step {step}: {', '.join(names)}")
    else:
      print(f"step {key}: {', '.join(ran)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
