"""The devices a run trains on: a `jax.sharding.Mesh` and where each array lives on it.

`config.mesh.data` devices split every batch (data parallelism; 0, the default, means every
visible device left after `members`); parameters, optimizer state and the hyperparameters are
replicated along `data`, and XLA sums the gradients across it. `config.mesh.members` devices
split a population's members (64 seeds over 8 devices: 8 members each; 0, the default, means
as many devices as divide both the population and the devices, so a single run has 1); members
x data both at once is a 2-D mesh. With one device there is no mesh: nothing is placed or
constrained, so a single-device run is the program it always was.

`config.mesh.model` devices split the parameters (and their optimizer state) of wide layers,
FSDP-style: each weight matrix is split along its largest dimension that divides evenly over
`model`, and XLA gathers it where a step needs it whole; small leaves (biases, scales) stay
replicated. It is for models whose parameters crowd one device; for the small models of most
runs, data parallelism alone is faster.

    Layout.mesh              Mesh(devices (members, data, model), ("members", "data", "model"))
                             or None
    Layout.put(tree)         the tree replicated on every device of the mesh (once)
    Layout.population(state) shardings of a population's state: the member axis split over
                             `members`, the shared step replicated
    Layout.batch             the sharding of a (B, ...) batch: split along B over `data`
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gmf_jax.checks import check_int
from gmf_jax.errors import ConfigError

DATA = "data"
MEMBERS = "members"
MODEL = "model"
MIN_SPLIT_SIZE = 2**14  # leaves smaller than this many values are replicated along `model`


@dataclasses.dataclass(frozen=True)
class Layout:
  """How a run's arrays are laid out over its devices (`mesh` None: one device)."""

  mesh: Mesh | None
  data: int  # devices along the batch
  members: int = 1  # devices along a population's members
  model: int = 1  # devices along the parameters of wide layers

  def _sharding(self, *axes) -> NamedSharding | None:
    """Arrays whose leading axes go along `axes` (None: not split); None on one device."""
    return None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec(*axes))

  @property
  def spmd_axis(self) -> str | None:
    """The mesh axis a population's vmap runs along (None: members are not split)."""
    return MEMBERS if self.members > 1 else None

  @property
  def replicated(self) -> NamedSharding | None:
    return self._sharding()

  @property
  def batch(self) -> NamedSharding | None:
    """A (B, ...) batch split along B over the `data` axis."""
    return self._sharding(DATA)

  @property
  def stacked_batches(self) -> NamedSharding | None:
    """Streamed batches (steps, B, ...), split along B."""
    return self._sharding(None, DATA)

  @property
  def stacked_member_batches(self) -> NamedSharding | None:
    """Per-member streamed batches (members, steps, B, ...): members and B both split."""
    return self._sharding(self.spmd_axis, None, DATA)

  @property
  def member_axis(self) -> NamedSharding | None:
    """Arrays with a leading member axis (keys, metrics): split over `members`."""
    return self._sharding(self.spmd_axis)

  def population(self, state) -> Any:
    """Shardings of a population's state: every leaf's member axis over `members`, the largest
    even dimension of a wide leaf over `model`; the shared step counter replicated."""
    if self.mesh is None:
      return None
    return jax.tree_util.tree_map(self._leaf, state.replace(step=None)).replace(
        step=self.replicated)

  def _leaf(self, leaf) -> NamedSharding:
    """A population leaf (members, ...): where its dimensions go."""
    shape = tuple(np.shape(leaf))[1:]
    axes: list[str | None] = [None] * len(shape)
    if self.model > 1 and len(shape) >= 2 and int(np.prod(shape)) >= MIN_SPLIT_SIZE:
      even = [i for i, n in enumerate(shape) if n % self.model == 0]
      if even:
        axes[max(even, key=lambda i: shape[i])] = MODEL
    spec = [self.spmd_axis, *axes]
    while len(spec) > 1 and spec[-1] is None:  # P(None,) for a leaf that is not split
      spec.pop()
    return self._sharding(*spec)

  def split_leaves(self, state) -> int:
    """How many leaves of a population's state are split over `model`."""
    if self.mesh is None or self.model == 1:
      return 0
    return sum(MODEL in s.spec for s in jax.tree_util.tree_leaves(
        self.population(state).replace(step=None)))

  def put(self, tree: Any) -> Any:
    """`tree` replicated on the mesh (on the default device, with one device)."""
    return jax.device_put(tree) if self.mesh is None else jax.device_put(tree, self.replicated)

  def put_population(self, state, keys) -> tuple[Any, Any]:
    """A population's state and keys laid out on the mesh (a no-op on one device)."""
    if self.mesh is None:
      return state, keys
    return jax.device_put(state, self.population(state)), jax.device_put(keys,
                                                                          self.member_axis)

  def describe(self) -> dict[str, Any]:
    devices = jax.devices() if self.mesh is None else list(self.mesh.devices.flat)
    return {"axes": {MEMBERS: self.members, DATA: self.data, MODEL: self.model},
            "devices": len(devices), "platform": devices[0].platform,
            "processes": jax.process_count()}


def make_layout(mesh_config, batch_size: int, devices: list | None = None,
                population: int = 1) -> Layout:
  """The run's layout from `config.mesh`, checked against the devices and the batch;
  `population`: how many members train in the program (what `mesh.members=0` divides).

  Raises:
    ConfigError: a mesh that does not match the devices, or a batch that does not split
      evenly over the `data` axis.
  """
  devices = list(jax.devices() if devices is None else devices)
  check_int("mesh.members", mesh_config.members, low=0,
            hint="0: as many devices as divide the population; 1: every device holds every "
                 "member; n: split the members over n devices.")
  check_int("mesh.data", mesh_config.data, low=0,
            hint="0: every visible device left; n: split each batch over n devices.")
  model = mesh_config.get("model", 1)
  check_int("mesh.model", model, low=1,
            hint="1: parameters replicated; n: split wide layers' parameters over n devices.")
  count, platform = len(devices), devices[0].platform
  members = mesh_config.members or _auto_members(population, count, model, mesh_config.data)
  show = "(CUDA_VISIBLE_DEVICES, XLA_FLAGS=--xla_force_host_platform_device_count)"
  for key, n in (("mesh.members", members), ("mesh.members x mesh.model", members * model)):
    if count % n:
      raise ConfigError(
          f"{key}={n} does not divide the {count} visible {platform} device(s); use a divisor "
          f"of {count}, or show other devices {show}.")
  rest = count // (members * model)
  data = mesh_config.data or rest
  if data * members * model != count:
    raise ConfigError(
        f"mesh.data={mesh_config.data} x mesh.members={members} x mesh.model={model} = "
        f"{data * members * model} devices, but {count} {platform} device(s) are visible; set "
        f"--config.mesh.data=0 (all that the others leave) or {rest}, or show fewer devices "
        f"{show}.")
  if batch_size % data:
    fits = max(data, batch_size // data * data)
    raise ConfigError(
        f"batch_size={batch_size} does not split evenly over the {data} devices of the "
        f"'data' axis; use a multiple of {data} (e.g. --config.batch_size={fits}).")
  if count == 1:
    return Layout(mesh=None, data=1)
  grid = np.asarray(devices).reshape(members, data, model)
  return Layout(mesh=Mesh(grid, (MEMBERS, DATA, MODEL)), data=data, members=members,
                model=model)


def _auto_members(population: int, count: int, model: int, data: int) -> int:
  """`mesh.members=0`: the most devices that divide the population and what `model` and an
  explicit `data` leave of the devices (1 for a single run)."""
  taken = model * (data or 1)
  return math.gcd(population, count // taken) if count % taken == 0 else 1


def check_population(layout: Layout, size: int, label: str = "the population") -> None:
  """A population must split evenly over `mesh.members` (before anything runs)."""
  if size % layout.members:
    raise ConfigError(
        f"{label} has {size} member(s), which do not split evenly over mesh.members="
        f"{layout.members} devices; use a multiple of {layout.members} (num_seeds, or a "
        f"sweep's --max_population) or set --config.mesh.members=1.")
