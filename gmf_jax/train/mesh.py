"""The devices a run trains on: a `jax.sharding.Mesh` and where each array lives on it.

`config.mesh.data` devices split every batch (data parallelism; 0, the default, means every
visible device); parameters, optimizer state and the hyperparameters are replicated, and XLA
sums the gradients across the `data` axis. With one device there is no mesh: nothing is placed
or constrained, so a single-device run is the program it always was.

    Layout.mesh          Mesh(devices, ("data",)), or None on one device
    Layout.put(tree)     the tree replicated on every device of the mesh (once, not per call)
    Layout.batch         the sharding of a (B, ...) batch: split along B over `data`
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gmf_jax.checks import check_int
from gmf_jax.errors import ConfigError

DATA = "data"


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a run's arrays are laid out over its devices (`mesh` None: one device)."""

  mesh: Mesh | None
  data: int  # devices along the batch

  @property
  def replicated(self) -> NamedSharding | None:
    return None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec())

  @property
  def batch(self) -> NamedSharding | None:
    """A (B, ...) batch split along B over the `data` axis."""
    return None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec(DATA))

  def stacked_batches(self, leading: int) -> NamedSharding | None:
    """Batches with `leading` axes before B (steps; members and steps), split along B."""
    if self.mesh is None:
      return None
    return NamedSharding(self.mesh, PartitionSpec(*([None] * leading), DATA))

  def put(self, tree: Any) -> Any:
    """`tree` replicated on the mesh (a no-op on one device)."""
    return tree if self.mesh is None else jax.device_put(tree, self.replicated)

  def describe(self) -> dict[str, Any]:
    devices = jax.devices() if self.mesh is None else list(self.mesh.devices.flat)
    return {"axes": {DATA: self.data}, "devices": len(devices),
            "platform": devices[0].platform}


def make_layout(mesh_config, batch_size: int, devices: list | None = None) -> Layout:
  """The run's layout from `config.mesh`, checked against the devices and the batch.

  Raises:
    ConfigError: a mesh that does not match the devices, or a batch that does not split
      evenly over the `data` axis.
  """
  devices = list(jax.devices() if devices is None else devices)
  check_int("mesh.data", mesh_config.data, low=0,
            hint="0: every visible device; n: split each batch over n devices.")
  count, platform = len(devices), devices[0].platform
  data = mesh_config.data or count
  if data != count:
    raise ConfigError(
        f"mesh.data={mesh_config.data} does not match the {count} visible {platform} "
        f"device(s); set --config.mesh.data=0 (all of them) or {count}, or show fewer devices "
        "(CUDA_VISIBLE_DEVICES, XLA_FLAGS=--xla_force_host_platform_device_count).")
  if batch_size % data:
    fits = max(data, batch_size // data * data)
    raise ConfigError(
        f"batch_size={batch_size} does not split evenly over the {data} devices of the "
        f"'data' axis; use a multiple of {data} (e.g. --config.batch_size={fits}).")
  if count == 1:
    return Layout(mesh=None, data=1)
  return Layout(mesh=Mesh(np.asarray(devices), (DATA,)), data=data)
