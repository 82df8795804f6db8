"""A population on the CPU trains on every core: one XLA CPU device per core, members split.

XLA runs the small operations of our models on one thread, so a population vmapped on the one
CPU device JAX shows by default keeps one core busy however many the machine has. Shown as N
CPU devices, the members split over them (`config.mesh.members`, 0: automatic, see
`gmf_jax.train.mesh`) and N parts of the population train side by side: on a 2-core VM a
16-seed MLP ensemble trains 1.6-2x more member-steps per second (benchmarks/RESULTS.md).

JAX fixes the number of CPU devices when its first backend starts, and a single run on several
CPU devices would split its batches over them (another program, other last bits). So only a
command-line population asks for them: `python -m gmf_jax.main --config.num_seeds=N` and
`python -m gmf_jax.sweep` (in-process populations) call `allow()` at the start of the process;
`spread(sizes)` then shows the cores that divide every population's size, before anything
touches a device. It does nothing where the user chose the devices (`XLA_FLAGS`
`--xla_force_host_platform_device_count`, `JAX_NUM_CPU_DEVICES`, a non-default
`config.mesh`), after JAX started, or in a Python session that did not call `allow()` (a
notebook may call it first thing: its later single runs then see several CPU devices too).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable

log = logging.getLogger("gmf_jax")

_allowed = False


def allow() -> None:
  """Lets `spread` show the CPU cores as devices in this process (the command lines)."""
  global _allowed
  _allowed = True


def usable_cores() -> int:
  """The cores this process may run on (its affinity mask, e.g. under Slurm or taskset)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def device_count_for(sizes: Iterable[int], cores: int) -> int:
  """The most CPU devices, at most `cores`, that divide the size of every population."""
  common = 0
  for size in sizes:
    common = math.gcd(common, int(size))
  if common == 0:  # no population
    return 1
  return max(d for d in range(1, cores + 1) if common % d == 0)


def _user_chose() -> bool:
  import jax

  return ("xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
          or jax.config.jax_num_cpu_devices != -1)


def spread(sizes: Iterable[int], meshes: Iterable = ()) -> int:
  """Shows the CPU as one device per core that divides every population size, when `allow()`
  was called and nothing has touched a device yet; `meshes`: the populations' `config.mesh`
  (any that is not the default leaves the devices alone).

  Returns:
    The CPU devices asked for (1: left as it was).
  """
  import jax
  from jax._src import xla_bridge

  from gmf_jax.config import default_config

  sizes, default = list(sizes), default_config().mesh
  if (not _allowed or _user_chose() or xla_bridge.backends_are_initialized()
      or any(mesh.get(k, v) != v for mesh in meshes for k, v in default.items())):
    return 1
  count = device_count_for(sizes, usable_cores())
  if count > 1:
    jax.config.update("jax_num_cpu_devices", count)
    log.info("populations of %s member(s): the CPU shows %d devices (one per core), members "
             "split over them", "/".join(map(str, sorted(set(sizes)))), count)
  return count
