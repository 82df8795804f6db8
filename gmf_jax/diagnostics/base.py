"""The one shape of a diagnostic: a pure `compute` the framework vmaps over members, and an
optional host-side `draw`.

A diagnostic is made at the config edge by a factory, `factory(exp, **kwargs) -> Diagnostic`,
which checks the experiment meets its requirements (a ConfigError says why not) and returns

    Diagnostic(compute, draw=None, static={})

- `compute(state, probe, rng) -> (scalars, arrays)` is pure and jittable: `state` is ONE
  member's TrainState (no member axis), `probe` the fixed `{'x', 'y'}` batch, `rng` the key of
  this (diagnostic, step, member). `scalars` maps names to 0-d arrays, `arrays` names to arrays.
  The framework jits it and vmaps it over the population's member axis: every member is
  computed in one call, and the results come to the host once.
- `draw(arrays, scalars) -> {name: matplotlib Figure}` (optional) runs on the host, from numpy
  only: `arrays` is exactly what is saved in the npz (`static` included), `scalars` are floats.
  So a figure can be redrawn later from the saved files (`gmf_jax.diagnostics.draw_figures`).
- `static` holds host arrays known at build time that cannot be traced (a layer's name, the map
  a Jacobian is of); they are saved with every result's arrays, first.

Scalars go to metrics.csv and wandb as `diag/<name>/<key>`, arrays to
`diagnostics/<name>/step_<N>.npz`, figures to `diagnostics/<name>/step_<N>_<fig>.png` (and
wandb). A population draws its figures only where the caller asks (see runner.py).

The old form, a factory returning a plain callable `(state, probe, rng) -> DiagnosticResult`
with host values, still works: it runs once per member, on each member's sliced state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import jax
import numpy as np
from flax.training.train_state import TrainState

if TYPE_CHECKING:
  from matplotlib.figure import Figure

Scalars = dict[str, jax.Array]
Arrays = dict[str, jax.Array]
Compute = Callable[[TrainState, dict[str, jax.Array], jax.Array], tuple[Scalars, Arrays]]
Draw = Callable[[dict[str, np.ndarray], dict[str, float]], "dict[str, Figure]"]


@dataclasses.dataclass(frozen=True)
class Diagnostic:
  """What a factory returns: a pure `compute`, an optional host `draw`, and `static` host
  arrays fixed at build time (see the module docstring)."""

  compute: Compute
  draw: Draw | None = None
  static: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PopulationDiagnostic:
  """A diagnostic of the whole population at once (how its members differ from each other):
  `compute(states, probe, rng) -> (scalars, arrays)` takes the population's state, every leaf
  with a leading member axis (the step shared), and is jitted as it is, not vmapped. Its
  results are the population's, written once in the population's folder
  (`populations/<id>/diagnostics/<name>/`, scalars in that folder's metrics.csv), not in the
  members' folders. A population of one has nothing to compare: it is refused at build time
  (`make_diagnostics`), and a population that shrank to one member skips it."""

  compute: Compute
  draw: Draw | None = None
  static: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class DiagnosticResult:
  """What an old-form diagnostic returns: host numpy arrays, and matplotlib Figures or
  zero-argument callables returning one (drawn only when written)."""

  scalars: dict[str, float] = dataclasses.field(default_factory=dict)
  arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  figures: dict[str, Any] = dataclasses.field(default_factory=dict)


class PerMemberDiagnostic(Protocol):
  """The old form: called once per member, on its own state, returning host values."""

  def __call__(self, state: TrainState, probe: dict[str, jax.Array],
               rng: jax.Array) -> DiagnosticResult: ...


Factory = Callable[..., Diagnostic | PerMemberDiagnostic]


def to_host(tree) -> Any:
  """Device arrays to numpy, once, after the jitted work."""
  return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
