"""Choosing and preparing a run's directory."""

from __future__ import annotations

import datetime
import os
import secrets

from gmf_jax.errors import ConfigError

RUNS_ROOT = "runs"


def new_run_dir(name: str, root: str = RUNS_ROOT, now: datetime.datetime | None = None) -> str:
  """`<root>/<name>-<YYYYmmdd-HHMMSS>-<6 hex>`: sortable by time, unique across processes."""
  now = now or datetime.datetime.now()
  safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "run"
  return os.path.join(root, f"{safe}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}")


def prepare_workdir(workdir: str) -> str:
  """Creates `workdir` and checks it is writable; refuses one that already holds a run.

  Returns:
    The absolute path.

  Raises:
    ConfigError: the folder holds a run (nothing is overwritten) or cannot be written.
  """
  workdir = os.path.abspath(workdir)
  if os.path.exists(os.path.join(workdir, "metrics.csv")):
    raise ConfigError(
        f"--workdir={workdir} already holds a run (metrics.csv); choose a new folder or leave "
        "--workdir out to get a fresh one under runs/. Nothing was changed."
    )
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir={workdir} is a file, not a folder.")
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write-test-{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"--workdir={workdir} is not writable ({e.strerror}).") from e
  return workdir
