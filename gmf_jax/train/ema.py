"""Averaged weights (`ema.decay`): an exponential moving average of the parameters and of the
model's state collections, kept in `TrainState.ema` as {"params": ..., **model_state}.

After every applied optimizer step, `ema = decay * ema + (1 - decay) * live`, from the initial
weights (no bias correction). The decay is a hyperparameter as data (`hparams["ema.decay"]`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def ema_init(params: Any, model_state: dict[str, Any]) -> dict[str, Any]:
  """The averaged weights at the start: the initial ones."""
  return {"params": params, **model_state}


def ema_update(ema: dict[str, Any], params: Any, model_state: dict[str, Any],
               decay: jax.Array) -> dict[str, Any]:
  """One step of the average: `decay * ema + (1 - decay) * live`, leaf by leaf (floating
  leaves; others, such as counters, take the live value)."""
  live = {"params": params, **model_state}

  def mix(e, w):
    if not jnp.issubdtype(e.dtype, jnp.floating):
      return w
    d = decay.astype(e.dtype)
    return d * e + (1 - d) * w

  return jax.tree_util.tree_map(mix, ema, live)
