"""Diagnostics by name, chosen and scheduled in `config.diagnostics`.

    c.diagnostics.jacobian = dict(every_steps=2000, of="decoder")
    c.diagnostics.hessian = dict(schedule="log", num_points=8, k=3)
    c.diagnostics.curvature = dict(fn="my_pkg.diags:make_curvature", schedule="end")

Each entry's `fn` (default: the entry's name) is a factory `factory(exp, **kwargs)` returning a
callable `(state, probe, rng) -> DiagnosticResult` (see base.py); the entry's other keys, except
the schedule keys `schedule`, `every_steps` and `num_points`, are the factory's kwargs. The
schedule is 'every' when `every_steps` is given, else 'end'; a schedule key the chosen schedule
does not use is refused. Each factory checks its own options (`diagnostics.<name>.<option>`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

from gmf_jax.diagnostics.base import Diagnostic, DiagnosticResult, Factory
from gmf_jax.diagnostics.classification import make_confusion_matrix
from gmf_jax.diagnostics.generative import (
    make_latent_space,
    make_latent_traversal,
    make_reconstructions,
    make_samples,
)
from gmf_jax.diagnostics.geometry import make_hessian, make_jacobian
from gmf_jax.diagnostics.network import make_activation_stats, make_weight_stats
from gmf_jax.diagnostics.schedule import Schedule, make_schedule
from gmf_jax.errors import ConfigError
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
}


@dataclasses.dataclass(frozen=True)
class ScheduledDiagnostic:
  name: str
  run: Diagnostic
  schedule: Schedule


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
    kwargs = checked_kwargs(factory, {k: v for k, v in entry.items()}, key=key)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    out.append(ScheduledDiagnostic(name, factory(exp, **kwargs), schedule))
  return out


__all__ = ["DIAGNOSTICS", "Diagnostic", "DiagnosticResult", "ScheduledDiagnostic",
           "make_diagnostics"]
