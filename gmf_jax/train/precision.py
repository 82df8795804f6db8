"""Mixed precision: the model computes in `precision.compute`, everything else in float32.

- `float32` (default): as written.
- `bfloat16`: parameters and optimizer state stay float32; the model's parameters and floating
  inputs are cast to bfloat16 where the model is called, its outputs back to float32, so the
  loss, the gradients (the cast's transpose) and the update are float32 (see
  `gmf_jax.models.variables.bound_apply`).
- `float16`: the same, with dynamic loss scaling. The loss is multiplied by a scale before the
  backward pass and the gradients divided by it; a step whose gradients overflow is skipped
  (parameters, optimizer state and model state unchanged) and halves the scale; after
  `GROWTH_INTERVAL` finite steps in a row the scale doubles. Skipped steps show as
  `train/skipped` (the fraction of steps in the log window) and the scale as
  `train/loss_scale`; the total is in `TrainState.loss_scale["skipped"]`, so it survives a
  resume.

Normalization layers compute their statistics in float32 whatever the input; a built-in model's
BatchNorm returns the input's dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

COMPUTE = {"float32": None, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
INITIAL_SCALE = 2.0**15
GROWTH_INTERVAL = 2000
MIN_SCALE = 1.0


def compute_dtype(name: str):
  """The dtype the model computes in (None: float32, no casting)."""
  return COMPUTE[name]


def scales_loss(name: str) -> bool:
  return name == "float16"


def initial_loss_scale() -> dict[str, jax.Array]:
  return {"scale": jnp.asarray(INITIAL_SCALE, jnp.float32),
          "good_steps": jnp.zeros((), jnp.int32),
          "skipped": jnp.zeros((), jnp.int32)}


def all_finite(tree) -> jax.Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def next_loss_scale(loss_scale: dict[str, jax.Array], finite: jax.Array) -> dict[str, jax.Array]:
  """The scale after a step: halved (not below MIN_SCALE) after an overflow, doubled after
  GROWTH_INTERVAL finite steps in a row."""
  scale, good = loss_scale["scale"], loss_scale["good_steps"] + 1
  grow = good >= GROWTH_INTERVAL
  scale = jnp.where(finite, jnp.where(grow, scale * 2, scale), jnp.maximum(scale / 2, MIN_SCALE))
  good = jnp.where(finite & ~grow, good, 0)
  return {"scale": scale, "good_steps": good.astype(jnp.int32),
          "skipped": loss_scale["skipped"] + (~finite).astype(jnp.int32)}
