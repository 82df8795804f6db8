"""Command line: parse the flags, load the config, hand it to `train_and_evaluate`.

The config text is parsed and checked (unknown keys, values of the wrong type) before the
training stack (jax, flax, orbax, wandb, matplotlib) is imported, so a typo fails at once;
`train_and_evaluate` then checks every value's range before it writes or computes anything.
"""

from __future__ import annotations

import sys

from gmf_jax import cpu_devices
from gmf_jax.config import load_config
from gmf_jax.errors import ConfigError, NonFiniteError
from gmf_jax.runlog.wandb_writer import start_wandb_early
from gmf_jax.train.preemption import Preempted

USAGE = (
    "usage: python -m gmf_jax.main --config=CONFIG.py[:variant] [--config.KEY=VALUE ...] "
    "[--workdir=DIR]"
)

HELP = f"""{USAGE}

Trains the model a config file describes and records the run in its own folder.

options:
  --config=FILE.py[:variant]  a Python file with get_config(arg=None); the text after ':' is
                              passed as arg (shipped configs take variants such as 'smoke')
  --config.KEY=VALUE          override any key of the config, e.g. --config.batch_size=32;
                              --config.lr=3e-4 sets optimizer.learning_rate
  --workdir=DIR               the run folder (default runs/<name>-<time>-<id>); a folder that
                              holds the same run resumes it from its latest checkpoint
  -h, --help                  show this message

examples:
  python -m gmf_jax.main --config=configs/vae.py
  python -m gmf_jax.main --config=configs/vae.py --config.lr=3e-4 --config.loss.beta=4
  python -m gmf_jax.main --config=configs/vae.py:conv,smoke --workdir=runs/try
  python -m gmf_jax.main --config=configs/mlp.py --config.schedule.name=constant
  python -m gmf_jax.main --config=configs/mlp.py --config.num_seeds=16   # a seed ensemble

exit status: 0 completed; 1 failed (non-finite loss); 2 bad input (refused before training);
128+signal preempted by SIGTERM/Ctrl-C (rerun the same command to resume).
"""


def parse_args(argv: list[str]) -> tuple[str, list[str], str | None]:
  """Splits argv into the config path, its overrides and the workdir."""
  path, overrides, workdir = None, [], None
  args = iter(argv)
  for arg in args:
    name, eq, value = arg.partition("=")
    if name in ("--config", "--workdir") and not eq:  # `--config PATH` form
      value = next(args, None)
      if value is None:
        raise ConfigError(f"{name} needs a value. {USAGE}")
    if name == "--config":
      path = value
    elif name == "--workdir":
      workdir = value
    elif name.startswith("--config."):
      overrides.append(arg if eq else f"{arg}={next(args, '')}")
    elif name in ("-h", "--help"):
      print(HELP)
      raise SystemExit(0)
    else:
      raise ConfigError(f"unknown argument {arg!r}. {USAGE}")
  if path is None:
    raise ConfigError(f"--config is required. {USAGE}")
  return path, overrides, workdir


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  try:
    path, overrides, workdir = parse_args(argv)
    config = load_config(path, overrides)
    cpu_devices.allow()  # an ensemble here uses every CPU core (a fresh process)
    start_wandb_early(config)  # wandb imports in its process while this one imports the rest
    result = run(config, workdir)  # the heavy imports, once the input parses
    if config.num_seeds != 1:
      print(f"seed ensemble {result.workdir}: {result.describe()}")
      return 0 if result.all_completed else 1
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except NonFiniteError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except Preempted as e:
    print(f"preempted: {e}", file=sys.stderr)
    return e.exit_code
  return 0


def run(config, workdir: str | None = None):
  """Runs what a config describes, as the command line does: one run, or with `num_seeds` > 1
  a seed ensemble (one vmapped program, a folder per seed).

  Returns:
    A `gmf_jax.TrainResult` for one run; a `gmf_jax.sweep.SweepResult` for an ensemble.
  """
  if config.get("num_seeds", 1) != 1:
    from gmf_jax.sweep.run import run_seed_ensemble

    return run_seed_ensemble(config, workdir)
  from gmf_jax.train.loop import train_and_evaluate

  return train_and_evaluate(config, workdir)


if __name__ == "__main__":
  sys.exit(main())
