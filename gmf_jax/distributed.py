"""Several processes, one run: `jax.distributed` start-up and what only process 0 does.

A multi-process job (several hosts, or several processes on one host) runs the same command in
every process. Each process holds its own devices; together they form one global mesh (see
`gmf_jax.train.mesh`), and every jitted chunk, evaluation and checkpoint is a collective that
every process calls at the same step. Only process 0 (the primary) writes the run folder:
config.json, metadata.json, metrics.csv, summary.json, plots, diagnostics and the wandb run;
orbax writes each checkpoint from all processes together (each its own shards), never gathering
the state on one host. A SIGTERM to any process stops every process at the same step, through
JAX's preemption sync point (see `PreemptionGuard`).

`config.distributed.enabled`:
  'auto'  start `jax.distributed` when the environment describes a multi-process job: a Slurm
          step with more than one task (`srun`), `JAX_COORDINATOR_ADDRESS` with
          `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, or `num_processes` > 1 in the config;
  'yes'   always (JAX finds the cluster itself where it can: Slurm, Open MPI, Kubernetes, TPU);
  'no'    never: one process.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from gmf_jax.checks import check_choice, check_int
from gmf_jax.errors import ConfigError

log = logging.getLogger("gmf_jax")

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


def initialize(dist: Mapping[str, Any]) -> None:
  """Starts `jax.distributed` once, when the config or environment describes several
  processes; before anything touches a device. A no-op for one process."""
  arguments = job_arguments(dist)
  if arguments is None or jax.distributed.is_initialized():
    return
  jax.distributed.initialize(**{k: v for k, v in arguments.items() if v is not None})
  log.info("process %d of %d: %d local device(s) of %d.", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())


def multi_process() -> bool:
  return jax.process_count() > 1


def is_primary() -> bool:
  """Whether this process writes the run's files (process 0, or the only one)."""
  return jax.process_index() == 0


def broadcast_json(value: Any) -> Any:
  """Process 0's `value` (JSON-able), in every process; `value` itself with one process."""
  if not multi_process():
    return value
  from jax.experimental import multihost_utils

  data = np.frombuffer(json.dumps(value).encode(), np.uint8) if is_primary() else None
  size = multihost_utils.broadcast_one_to_all(np.int32(0 if data is None else data.size))
  buffer = data if data is not None else np.zeros(int(size), np.uint8)
  got = multihost_utils.broadcast_one_to_all(buffer)
  return json.loads(np.asarray(got, np.uint8).tobytes().decode())


def agree(fn, *args, **kwargs):
  """Runs `fn` in process 0 and hands its result to every process; an error there is raised
  as a ConfigError in every process, so all stop before any compute (none waits forever).

  With one process: `fn(*args, **kwargs)`.
  """
  if not multi_process():
    return fn(*args, **kwargs)
  result, error, failure = None, None, None
  if is_primary():
    try:
      result = fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - told to every process, then raised here
      failure, error = e, [isinstance(e, ConfigError), f"{type(e).__name__}: {e}"]
  result, error = broadcast_json([result, error])
  if failure is not None:
    raise failure
  if error is not None:
    is_config, message = error
    if is_config:
      raise ConfigError(message.partition(": ")[2])
    raise RuntimeError(f"process 0 failed: {message}")
  return result


def host_copy(tree: Any) -> Any:
  """The global values of `tree` as host arrays in every process (a collective: every
  process calls it); `device_get` with one process."""
  if not multi_process():
    return jax.device_get(tree)
  from jax.experimental import multihost_utils

  return multihost_utils.process_allgather(tree, tiled=True)


def reached_sync_point(step: int) -> bool:
  """Whether a SIGTERM to any process asks every process to stop at `step` (JAX's preemption
  sync point: the same answer in every process, which all call with the same steps)."""
  from jax.experimental import multihost_utils

  return multihost_utils.reached_preemption_sync_point(step)


VERDICT_TIMEOUT_MS = 3_600_000  # process 0 may spend long on diagnostics between two chunks


def primary_verdict(count: int, error: str | None) -> str | None:
  """Process 0's word at the `count`-th chunk boundary: None to go on, or the error that
  stopped it (recording or diagnostics, which only it does), in every process.

  Through the coordination service's key-value store, not a device collective: the followers'
  next chunk is already queued, and nothing waits on it.
  """
  if not multi_process():
    return error
  from jax._src import distributed as jax_distributed

  client = jax_distributed.global_state.client
  key = f"gmf_jax/verdict/{count}"
  if is_primary():
    client.key_value_set(key, error or "")
    return error
  return client.blocking_key_value_get(key, VERDICT_TIMEOUT_MS) or None


def barrier(name: str) -> None:
  """Every process waits here for the others (a no-op with one process)."""
  if multi_process():
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def everyone(ok: bool) -> bool:
  """Whether `ok` holds in every process (a collective; `ok` itself with one process)."""
  if not multi_process():
    return ok
  from jax.experimental import multihost_utils

  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))
