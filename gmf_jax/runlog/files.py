"""Small, safe file writes for the run folder."""

from __future__ import annotations

import json
import os
from typing import Any


def write_json(path: str, data: Any, *, sync: bool = True) -> None:
  """Writes JSON atomically (temp file + rename): a crash leaves the old file or the new one.

  With `sync`, the data is on disk before the rename (it survives a power cut too).
  """
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(data, f, indent=2, sort_keys=True, default=_jsonable)
    if sync:
      f.flush()
      os.fsync(f.fileno())
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def _jsonable(value):
  if hasattr(value, "tolist"):
    return value.tolist()
  return str(value)
