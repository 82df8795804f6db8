"""The random streams a model's `apply` receives."""

from __future__ import annotations

import jax


def model_rngs(rng: jax.Array) -> dict[str, jax.Array]:
  """The rng streams models use: `sample` (latent draws) and `dropout`."""
  sample, dropout = jax.random.split(rng)
  return {"sample": sample, "dropout": dropout}
