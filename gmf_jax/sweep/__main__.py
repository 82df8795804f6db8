"""python -m gmf_jax.sweep --sweep=sweeps/vae_lr_beta.py [--workdir=DIR]
    [--executor=vmap|local|submitit] [--config.KEY=VALUE ...] [--retry-failed]
    [--max_population=N] [--max_workers=N]
python -m gmf_jax.sweep --replay=runs/<sweep>/<member> [--workdir=DIR]

Runs every member of a sweep file, grouped into populations that each train in one vmapped
program; every member is a complete run folder under runs/<sweep>/<member>/. A sweep whose
`seeds` has `until` runs its seed rounds to the end (gmf_jax/sweep/seed_rounds.py). Running the same
command again skips completed members, resumes preempted and crashed ones, and leaves failed
ones alone unless --retry-failed.

options:
  --sweep=FILE          a sweep file with get_sweep() (see sweeps/README.md)
  --workdir=DIR         the sweep folder (default runs/<sweep name>)
  --executor=NAME       vmap (default: this process), local (a process per population,
                        --max_workers at a time), submitit (a Slurm job per population)
  --config.KEY=VALUE    an override applied to every member
  --retry-failed        train failed members again, from step 0
  --max_population=N    at most N members per vmapped program (memory)
  --max_workers=N       local executor: populations at once (default 2)
  --slurm.KEY=VALUE     submitit executor: a parameter for AutoExecutor.update_parameters
                        (e.g. --slurm.partition=gpu --slurm.timeout_min=600)
  --replay=MEMBER       a PBT sweep's member folder: train one new run (in --workdir, default
                        runs/<sweep>-replay-...) that follows the hyperparameters its weights
                        trained with, from step 0 (gmf_jax/sweep/replay.py)

exit status: 0 every member completed or stopped early; 1 some member failed; 2 bad input
(nothing written); 128+signal stopped by SIGTERM/Ctrl-C (rerun the same command to resume).
"""

from __future__ import annotations

import ast
import sys

from gmf_jax.errors import ConfigError, NonFiniteError

USAGE = ("usage: python -m gmf_jax.sweep --sweep=FILE [--workdir=DIR] "
         "[--executor=vmap|local|submitit]")


def _int(name: str, value: str) -> int:
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f"{name}={value!r} must be an integer.") from None


def parse_args(argv: list[str]) -> dict:
  args = {"overrides": [], "slurm": {}, "executor": "vmap", "workdir": None, "sweep": None,
          "retry_failed": False, "max_population": None, "max_workers": 2, "population": None,
          "replay": None}
  for arg in argv:
    name, eq, value = arg.partition("=")
    if name in ("-h", "--help"):
      print(__doc__)
      raise SystemExit(0)
    if name == "--retry-failed" and not eq:
      args["retry_failed"] = True
    elif name.startswith("--config.") and eq:
      args["overrides"].append(arg)
    elif name.startswith("--slurm.") and eq:
      try:
        parsed = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        parsed = value
      args["slurm"][name[len("--slurm."):]] = parsed
    elif name in ("--sweep", "--workdir", "--executor", "--population", "--replay") and eq:
      args[name[2:]] = value
    elif name in ("--max_population", "--max-population") and eq:
      args["max_population"] = _int("--max_population", value)
    elif name in ("--max_workers", "--max-workers") and eq:
      args["max_workers"] = _int("--max_workers", value)
    else:
      raise ConfigError(f"unknown argument {arg!r}. {USAGE}")
  if args["replay"]:
    others = [a for a in argv if not a.startswith(("--replay=", "--workdir="))]
    if others:
      raise ConfigError(f"--replay takes only --workdir; drop {others[0]!r}.")
  elif not args["sweep"]:
    raise ConfigError(f"--sweep is required. {USAGE}")
  return args


def main(argv: list[str] | None = None) -> int:
  from gmf_jax.train.preemption import Preempted

  argv = sys.argv[1:] if argv is None else argv
  try:
    args = parse_args(argv)
    if args["replay"]:
      from gmf_jax.sweep.replay import replay

      result = replay(args["replay"], args["workdir"])
      print(f"replay: {result.workdir}")
      return 0
    if args["population"]:  # a worker of the local or submitit executor
      from gmf_jax.sweep.executors import run_worker

      run_worker(args["sweep"], args["workdir"], args["population"])
      return 0
    from gmf_jax import cpu_devices
    from gmf_jax.sweep.executors import SweepStopped

    cpu_devices.allow()  # in-process populations use every CPU core (a fresh process)
    from gmf_jax.sweep.run import run_sweep

    try:
      result = run_sweep(args["sweep"], args["workdir"], executor=args["executor"],
                         overrides=args["overrides"], retry_failed=args["retry_failed"],
                         max_population=args["max_population"],
                         max_workers=args["max_workers"], submitit_options=args["slurm"])
    except SweepStopped as e:
      print(f"preempted: {e}", file=sys.stderr)
      return e.exit_code
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except NonFiniteError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except Preempted as e:
    print(f"preempted: {e}", file=sys.stderr)
    return e.exit_code
  print(f"sweep {result.workdir}: {result.describe()}")
  return 0 if result.all_completed else 1


if __name__ == "__main__":
  sys.exit(main())
