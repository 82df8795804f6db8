"""Diagnostics by name, chosen and scheduled in `config.diagnostics`.

    c.diagnostics.jacobian = dict(every_steps=2000, of="decoder")
    c.diagnostics.hessian = dict(schedule="log", num_points=8, k=3)
    c.diagnostics.curvature = dict(fn="my_pkg.diags:make_curvature", schedule="end")

Each entry's `fn` (default: the entry's name) is a factory `factory(exp, **kwargs)` returning a
`Diagnostic(compute, draw=None, static={})` (see base.py):

    def make_logit_scale(exp, power=2):
      def compute(state, probe, rng):  # one member's state; pure, jitted and vmapped for you
        logits = state_apply(state)({"params": state.params}, probe["x"])
        return {"value": jnp.mean(jnp.abs(logits) ** power)}, {"logits": logits}
      return Diagnostic(compute)

(`gmf_jax.models.variables.state_apply(state)` is the model's `apply` with the state's collections
besides `params`, such as BatchNorm's `batch_stats`; `exp.model.apply` works for models without.)
`compute` runs over every member of a population in one vmapped call; `draw(arrays, scalars)`,
if given, makes matplotlib figures from the host arrays (`draw_figures` redraws a built-in's
from its saved npz). A factory may still return the old form, a plain callable
`(state, probe, rng) -> DiagnosticResult`: it runs once per member, not vmapped.

`weights='ema'` runs an entry on the averaged weights (`ema.decay`) instead of the live ones
('live', the default). The entry's other keys, except the schedule keys `schedule`,
`every_steps` and `num_points`, are the factory's kwargs. The schedule is 'every' when
`every_steps` is given, else 'end'; a schedule key the chosen schedule does not use is refused.
Each factory checks its own options (`diagnostics.<name>.<option>`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from gmf_jax.checks import check_choice
from gmf_jax.diagnostics.base import (
  Diagnostic,
  DiagnosticResult,
  Draw,
  Factory,
  PerMemberDiagnostic,
  PopulationDiagnostic,
)
from gmf_jax.diagnostics.classification import draw_confusion_matrix, make_confusion_matrix
from gmf_jax.diagnostics.generative import (
  draw_latent_space,
  draw_latent_traversal,
  draw_reconstructions,
  draw_samples,
  make_latent_space,
  make_latent_traversal,
  make_reconstructions,
  make_samples,
)
from gmf_jax.diagnostics.geometry import draw_jacobian, make_hessian, make_jacobian
from gmf_jax.diagnostics.network import make_activation_stats, make_weight_stats
from gmf_jax.diagnostics.population import (
  draw_cka,
  draw_ensemble,
  draw_mode_connectivity,
  make_cka,
  make_ensemble,
  make_mode_connectivity,
)
from gmf_jax.diagnostics.schedule import Schedule, make_schedule
from gmf_jax.errors import ConfigError
from gmf_jax.models.variables import WEIGHTS
from gmf_jax.registry import checked_kwargs, resolve

DIAGNOSTICS: dict[str, Factory] = {
    "reconstructions": make_reconstructions,
    "samples": make_samples,
    "latent_space": make_latent_space,
    "latent_traversal": make_latent_traversal,
    "jacobian": make_jacobian,
    "hessian": make_hessian,
    "weight_stats": make_weight_stats,
    "activation_stats": make_activation_stats,
    "confusion_matrix": make_confusion_matrix,
    # Across members: the whole population at once (PopulationDiagnostic).
    "cka": make_cka,
    "mode_connectivity": make_mode_connectivity,
    "ensemble": make_ensemble,
}

# The built-ins that draw, by name: each draws from exactly what its npz holds.
DRAWERS: dict[str, Draw] = {
    "reconstructions": draw_reconstructions,
    "samples": draw_samples,
    "latent_space": draw_latent_space,
    "latent_traversal": draw_latent_traversal,
    "jacobian": draw_jacobian,
    "confusion_matrix": draw_confusion_matrix,
    "cka": draw_cka,
    "mode_connectivity": draw_mode_connectivity,
    "ensemble": draw_ensemble,
}


@dataclasses.dataclass(frozen=True)
class ScheduledDiagnostic:
  name: str
  diagnostic: Diagnostic | PopulationDiagnostic | PerMemberDiagnostic  # old form: a callable
  schedule: Schedule
  weights: str = "live"  # 'live' | 'ema': the weights it runs on (see gmf_jax.models.variables)


ACROSS_MEMBERS = (make_cka, make_mode_connectivity, make_ensemble)


def across_members(diag_config: Mapping[str, Any]) -> list[str]:
  """The configured diagnostics whose factory is a built-in across members (cka,
  mode_connectivity, ensemble): what a single run cannot compute."""
  names = []
  for name, entry in dict(diag_config).items():
    fn = dict(entry).get("fn", name) if isinstance(entry, Mapping) else name
    if DIAGNOSTICS.get(fn) in ACROSS_MEMBERS:
      names.append(name)
  return names


def make_diagnostics(diag_config: Mapping[str, Any], exp) -> list[ScheduledDiagnostic]:
  """Builds every configured diagnostic, checking the model meets its needs (ConfigError)."""
  out = []
  for name, entry in dict(diag_config).items():
    if isinstance(entry, ml_collections.ConfigDict):
      entry = entry.to_dict()
    entry = dict(entry) if isinstance(entry, Mapping) else None
    if entry is None:
      raise ConfigError(f"diagnostics.{name} must be a dict, e.g. dict(every_steps=1000).")
    key = f"diagnostics.{name}"
    factory = resolve(entry.pop("fn", name), DIAGNOSTICS, key=f"{key}.fn")
    # None counts as not given (a saved config.json may hold it); make_schedule checks the rest.
    every = entry.pop("every_steps", None)
    kind = entry.pop("schedule", "every" if every is not None else "end")
    schedule = make_schedule(kind, exp.num_steps, every_steps=every,
                             num_points=entry.pop("num_points", None), key=key)
    weights = entry.pop("weights", "live")
    check_choice(f"{key}.weights", weights, WEIGHTS)
    if weights == "ema" and not exp.step.ema:
      raise ConfigError(f"{key}.weights='ema' needs averaged weights: set ema.decay (e.g. "
                        "0.999), or weights='live'.")
    kwargs = checked_kwargs(factory, {k: v for k, v in entry.items()}, key=key)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    made = factory(exp, **kwargs)
    if not (isinstance(made, (Diagnostic, PopulationDiagnostic)) or callable(made)):
      raise ConfigError(f"{key}.fn returned a {type(made).__name__}; a diagnostic factory "
                        "returns gmf_jax.diagnostics.Diagnostic(compute, draw=...) (or, the old "
                        "form, a callable (state, probe, rng) -> DiagnosticResult).")
    out.append(ScheduledDiagnostic(name, made, schedule, weights))
  return out


def draw_figures(fn_name: str, arrays: Mapping[str, np.ndarray],
                 scalars: Mapping[str, float] | None = None) -> dict[str, Any] | None:
  """A built-in diagnostic's figures, drawn from its saved arrays, no experiment needed.

  Args:
    fn_name: the diagnostic's factory name (config.json `diagnostics.<name>.fn`, default the
      entry's name), e.g. 'jacobian'.
    arrays: what `diagnostics/<name>/step_<N>.npz` holds, e.g. `dict(np.load(path))`.
    scalars: its `diag/<name>/<key>` values at that step, by key (optional: the built-ins draw
      from the arrays alone).

  Returns:
    {figure name: matplotlib Figure}, the names of the PNGs a run writes
    (`step_<N>_<name>.png`); None if `fn_name` has no drawer (a user's diagnostic, or a
    built-in without figures such as 'hessian').

  Example:
    with np.load("runs/r/diagnostics/jacobian/step_40.npz") as f:
      figs = draw_figures("jacobian", dict(f))   # {'spectrum': Figure}
  """
  drawer = DRAWERS.get(fn_name)
  if drawer is None:
    return None
  return drawer({k: np.asarray(v) for k, v in arrays.items()}, dict(scalars or {}))


__all__ = ["ACROSS_MEMBERS", "DIAGNOSTICS", "DRAWERS", "Diagnostic", "DiagnosticResult",
           "PopulationDiagnostic", "ScheduledDiagnostic", "across_members", "draw_figures",
           "make_diagnostics"]
