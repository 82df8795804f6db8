"""Choosing and preparing a run's directory."""

from __future__ import annotations

import datetime
import os
import secrets

RUNS_ROOT = "runs"


def new_run_dir(name: str, root: str = RUNS_ROOT, now: datetime.datetime | None = None) -> str:
  """`<root>/<name>-<YYYYmmdd-HHMMSS>-<6 hex>`: sortable by time, unique across processes."""
  now = now or datetime.datetime.now()
  safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "run"
  return os.path.join(root, f"{safe}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}")
