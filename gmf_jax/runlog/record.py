"""The run folder's self-description: config.json, config.py, metadata.json and git.diff.

`open_run_folder` either starts a new run or, when the folder already holds one, checks that the
config describes the same run (so it can be resumed) before anything is written.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import os
import shutil
import threading
import time
from typing import Any

import gmf_jax
from gmf_jax.errors import ConfigError
from gmf_jax.runlog import provenance
from gmf_jax.runlog.files import read_json, write_json, write_text
from gmf_jax.runlog.liveness import RECORDED, heartbeat_record, liveness, process_identity
from gmf_jax.runlog.resume import check_same_run

STATUSES = RECORDED  # what metadata.json's `status` holds; effective_status adds `crashed`


@dataclasses.dataclass
class RunFolder:
  """A run's folder, and its metadata as written to `metadata.json`.

  The training thread and the heartbeat thread both write metadata.json: every change goes
  through `update`, `set_status` or `beat`, which hold one lock.
  """

  path: str
  metadata: dict[str, Any]
  saved_config: dict[str, Any] | None  # the config.json found in the folder, when resuming
  _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

  @property
  def resumed(self) -> bool:
    return self.saved_config is not None

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  @property
  def completed(self) -> bool:
    return self.metadata.get("status") == "completed"

  def set_status(self, status: str, **fields: Any) -> None:
    """Records the status (and e.g. the error) in metadata.json, atomically."""
    assert status in STATUSES, status
    with self._lock:
      self.metadata["status"] = status
      self.metadata["end_time"] = None if status == "running" else _now()
      self.metadata.update(fields)
      self.metadata["sessions"][-1].update(status=status,
                                           end_time=self.metadata.get("end_time"), **fields)
      write_json(self.file("metadata.json"), self.metadata)

  def update(self, *, sync: bool = True, **fields: Any) -> None:
    """Sets top-level metadata fields (e.g. the wandb run id) and writes metadata.json
    (`sync=False`: without waiting for the disk; the next synced write makes it durable)."""
    with self._lock:
      self.metadata.update(fields)
      write_json(self.file("metadata.json"), self.metadata, sync=sync)

  def beat(self, step: int | None) -> None:
    """Refreshes the heartbeat: a reader can tell this run is alive (see runlog.liveness).

    Not fsynced: a heartbeat lost in a power cut says nothing wrong.
    """
    with self._lock:
      self.metadata["heartbeat"] = heartbeat_record(step)
      write_json(self.file("metadata.json"), self.metadata, sync=False)


class FollowerFolder(RunFolder):
  """The run folder as a process other than process 0 sees it: its path and whether the run
  resumed, and no writes (process 0 writes the record; see gmf_jax.distributed)."""

  def __init__(self, path: str, resumed: bool):
    super().__init__(os.path.abspath(path), {}, {} if resumed else None)

  def set_status(self, status: str, **fields: Any) -> None:
    self.metadata["status"] = status

  def update(self, **fields: Any) -> None:
    pass

  def beat(self, step: int | None) -> None:
    pass


def open_run_folder(workdir: str, config: dict[str, Any], config_file: str | None,
                    variant: str | None = None) -> RunFolder:
  """Creates the run folder, or reopens one holding the same run, and writes its description.

  Args:
    workdir: the folder.
    config: the resolved config as a dict (what config.json holds).
    config_file: the config file it came from (copied as config.py), if known.
    variant: the `:variant` the config file was loaded with, if any.

  Raises:
    ConfigError: the folder is not writable, holds something else, or holds a run with a
      different config. Nothing in it is changed then.
  """
  path = os.path.abspath(workdir)
  _check_writable(path)
  saved_config = os.path.join(path, "config.json")
  previous, metadata = _check_folder(path, config)
  resumed = previous is not None
  if not resumed:
    metadata = _new_metadata(config, config_file, variant)
  sessions = metadata.setdefault("sessions", [])
  if sessions and sessions[-1].get("status") == "running":  # it died without a word
    sessions[-1]["status"] = "crashed"
  identity = process_identity()
  sessions.append({"start_time": _now(), "command": provenance.command_line(),
                   "status": "running", "pid": identity["pid"],
                   "hostname": identity["hostname"]})
  metadata["process"] = identity  # who owns the run now, and its heartbeat
  metadata["heartbeat"] = heartbeat_record(None)  # the step is known once the state is restored
  folder = RunFolder(path, metadata, previous)
  write_json(saved_config, config)  # the resolved config (num_steps may have been extended)
  if config_file and not resumed:
    shutil.copyfile(config_file, folder.file("config.py"))
  diff = (metadata.get("git") or {}).pop("diff", None)
  if diff and not resumed:
    write_text(folder.file("git.diff"), diff)
  folder.set_status("running", error=None)  # a previous session's error is not this one's
  return folder


_FACTS_TTL_SEC = 10.0
_facts: dict[str, tuple[float, Any]] = {}


def _recent(key: str, compute):
  """`compute()`, reused for a few seconds: the members of a population open their folders
  together, and asking git and the devices once is enough for all of them."""
  now = time.monotonic()
  found = _facts.get(key)
  if found is None or now - found[0] > _FACTS_TTL_SEC:
    found = (now, compute())
    _facts[key] = found
  return copy.deepcopy(found[1])


def check_run_folder(workdir: str, config: dict[str, Any]) -> None:
  """The checks `open_run_folder` makes, without writing anything (a population checks every
  member's folder before it opens any).

  Raises:
    ConfigError: a file in the way, something else in the folder, a run with a different
      config, or a live run.
  """
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"--workdir={path} is a file, not a folder.")
  _check_folder(path, config)


def _check_folder(path: str, config: dict[str, Any]
                  ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
  """(the saved config, its metadata) of a folder holding this run, or (None, None) for a new
  one; raises ConfigError for anything else in it."""
  saved_config = os.path.join(path, "config.json")
  if os.path.exists(saved_config):
    previous = read_json(saved_config)
    check_same_run(previous, config, path)
    metadata = _read_metadata(path)
    _check_not_in_use(metadata, path)
    return previous, metadata
  shown = foreign_entries(path)
  if shown:
    raise ConfigError(
        f"--workdir={path} is not empty and holds no gmf_jax run (no config.json; it holds "
        f"{shown}). A run starts in a new or empty folder: choose another --workdir. Nothing "
        "was changed."
    )
  return None, None


# What may lie in a folder before a run's first file without making it someone else's: the
# write probe of a process killed at that moment, and what file browsers leave behind.
_LITTER = (".write-test-", ".DS_Store", ".ipynb_checkpoints", "Thumbs.db")


def foreign_entries(path: str) -> str:
  """The entries of an existing folder that a new run (or sweep) must not mix its files with,
  in words (`thesis.txt, notes and 3 more`); '' when there are none."""
  if not os.path.isdir(path):
    return ""
  found = sorted(e for e in os.listdir(path) if not e.startswith(_LITTER))
  return ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")


def _new_metadata(config: dict[str, Any], config_file: str | None,
                  variant: str | None) -> dict[str, Any]:
  code_dir = os.path.dirname(os.path.abspath(gmf_jax.__file__))
  git = _recent(f"git:{code_dir}", lambda: provenance.git_info(code_dir))
  metadata = {
      "seed": config.get("seed"),
      "start_time": _now(),
      "end_time": None,
      "status": "running",
      "command": provenance.command_line(),
      "config_file": os.path.abspath(config_file) if config_file else None,
      "config_variant": variant,
      "versions": _recent("versions", provenance.versions),
      "devices": _recent("devices", provenance.devices),
      "host": _recent("host", provenance.host_info),
      "git": git,
      "wandb_run_id": None,
  }
  if git.get("dirty"):
    metadata["git"]["diff_file"] = "git.diff"
  if config_file:
    config_git = _recent(f"git:{os.path.abspath(config_file)}",
                         lambda: provenance.git_info(config_file))
    if config_git.get("root") and config_git.get("root") != git.get("root"):
      config_git.pop("diff", None)
      metadata["config_git"] = config_git
  return metadata


def _check_not_in_use(metadata: dict[str, Any], path: str) -> None:
  """Refuses a folder whose run is alive in another process: two writers would corrupt it."""
  status, why = liveness(metadata)
  if status == "running":
    raise ConfigError(
        f"--workdir={path} is in use by a live run ({why}). Wait for it to end or stop it "
        "(SIGTERM saves a checkpoint), then run this command again. Nothing was changed.")


def _read_metadata(path: str) -> dict[str, Any]:
  try:
    return read_json(os.path.join(path, "metadata.json"))
  except (OSError, ValueError):  # lost or torn: start a fresh record, keep the run
    return {"status": "running", "sessions": [], "wandb_run_id": None}


def _check_writable(path: str) -> None:
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"--workdir={path} is a file, not a folder.")
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write-test-{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"--workdir={path} is not writable ({e.strerror or e}).") from e


def _now() -> str:
  return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
