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
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from gmf_jax.errors import ConfigError
from gmf_jax.job import job_arguments

log = logging.getLogger("gmf_jax")

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
