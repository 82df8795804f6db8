"""The job a run belongs to, as its config and environment describe it: one process, or
several. Read without JAX (the command line decides some things before importing it)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from gmf_jax.checks import check_choice, check_int
from gmf_jax.errors import ConfigError

# `config.distributed` of a config that leaves the section out: one process, unless the
# environment describes a job.
ONE_PROCESS = {"enabled": "auto", "coordinator_address": "", "num_processes": 0,
               "process_id": -1}


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f"environment variable {name}={value!r} must be an integer.") from None


def job_arguments(dist: Mapping[str, Any]) -> dict[str, Any] | None:
  """The arguments of `jax.distributed.initialize` this config and environment ask for, or None
  for a one-process run.

  Raises:
    ConfigError: bad values, or a multi-process job described only in part.
  """
  dist = {**ONE_PROCESS, **dict(dist)}
  check_choice("distributed.enabled", dist["enabled"], ("auto", "yes", "no"))
  check_int("distributed.num_processes", dist["num_processes"], low=0,
            hint="0: from the environment (Slurm, JAX_NUM_PROCESSES).")
  check_int("distributed.process_id", dist["process_id"], low=-1,
            hint="-1: from the environment (Slurm, JAX_PROCESS_ID).")
  if dist["enabled"] == "no":
    return None
  address = dist["coordinator_address"] or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  count = dist["num_processes"] or _env_int("JAX_NUM_PROCESSES")
  index = dist["process_id"] if dist["process_id"] >= 0 else _env_int("JAX_PROCESS_ID")
  slurm = (_env_int("SLURM_NTASKS") or 1) > 1 and "SLURM_STEP_ID" in os.environ
  explicit = address is not None or count is not None or index is not None
  if dist["enabled"] == "auto" and not slurm and not (count or 0) > 1:
    if explicit and count is None:
      raise ConfigError(
          "distributed: a coordinator address or process id is set but not the number of "
          "processes; set --config.distributed.num_processes (or JAX_NUM_PROCESSES), or "
          "--config.distributed.enabled=no for one process.")
    return None
  if explicit and not slurm and None in (address, count, index):
    missing = [name for name, v in (("coordinator_address (JAX_COORDINATOR_ADDRESS)", address),
                                    ("num_processes (JAX_NUM_PROCESSES)", count),
                                    ("process_id (JAX_PROCESS_ID)", index)) if v is None]
    raise ConfigError(f"distributed: a multi-process job needs {' and '.join(missing)} too "
                      "(the same address and count in every process, its own id in each).")
  if count is not None and index is not None and not 0 <= index < count:
    raise ConfigError(f"distributed.process_id={index} must be in [0, {count}) for "
                      f"num_processes={count}.")
  return {"coordinator_address": address, "num_processes": count, "process_id": index}
