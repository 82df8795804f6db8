"""The one shape of a diagnostic.

A diagnostic is made at the config edge by a factory, `factory(exp, **kwargs) -> Diagnostic`,
which checks the experiment meets its requirements (a ConfigError says why not) and builds its
jitted array work once. The made diagnostic is called between jitted training calls:

    result = diagnostic(state, probe, rng)   # state: TrainState; probe: {'x', 'y'} arrays

and returns named scalars (to metrics.csv and wandb as `diag/<name>/<key>`), arrays (to
`diagnostics/<name>/step_<N>.npz`) and figures (PNG beside them, and to wandb).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import jax
import numpy as np
from flax.training.train_state import TrainState


@dataclasses.dataclass
class DiagnosticResult:
  """What a diagnostic returns: host numpy arrays, and matplotlib Figures or zero-argument
  callables returning one (drawn only when written, so a warm-up call draws nothing)."""

  scalars: dict[str, float] = dataclasses.field(default_factory=dict)
  arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  figures: dict[str, Any] = dataclasses.field(default_factory=dict)


class Diagnostic(Protocol):
  def __call__(self, state: TrainState, probe: dict[str, jax.Array],
               rng: jax.Array) -> DiagnosticResult: ...


Factory = Callable[..., Diagnostic]


def to_host(tree) -> Any:
  """Device arrays to numpy, once, after the jitted work."""
  return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
