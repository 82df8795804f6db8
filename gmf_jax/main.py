"""Command line: `python -m gmf_jax.main --config=configs/vae.py[:variant] [--config.key=value ...]
[--workdir=DIR]`.

Parsing goes through `gmf_jax.load_config`, the same function notebooks call, so the command line
and Python accept the same overrides and fail with the same one-line errors.
"""

from __future__ import annotations

import sys

from gmf_jax.config import load_config
from gmf_jax.errors import ConfigError

USAGE = (
    "usage: python -m gmf_jax.main --config=CONFIG.py[:variant] [--config.KEY=VALUE ...] "
    "[--workdir=DIR]"
)


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
      print(__doc__)
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
    # Imported after parsing, so a typo fails before the slow imports.
    from gmf_jax.train.loop import NonFiniteError, Preempted, train_and_evaluate

    try:
      train_and_evaluate(config, workdir)
    except NonFiniteError as e:
      print(f"error: {e}", file=sys.stderr)
      return 1
    except Preempted as e:
      print(f"preempted: {e}", file=sys.stderr)
      return e.exit_code
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
