"""A model's variables beyond its parameters, and the weights a run evaluates.

A flax module may keep collections besides `params` that it updates itself in training:
`batch_stats` for BatchNorm, or a user's own (`self.variable("counts", ...)`). The train state
holds them as `TrainState.model_state` ({collection: tree}; empty for a model without any), and
every caller of the model reaches them through `bound_apply`:

- In training (`train=True`), the model runs with those collections mutable; the updated
  values are captured for the step, which stores them in the new state. The loss never sees
  them: its contract stays `loss(params, apply_fn, batch, rng, train)`.
- In evaluation, diagnostics and backfill (`train=False`), the saved values are used as they
  are, and nothing is updated.

With data parallelism (`mesh.data` > 1) the train step is one SPMD program over the global batch,
so BatchNorm's mean and variance over the batch axis are over the global batch: XLA inserts the
cross-device reduction, no `axis_name` is needed.

Averaged weights (`ema.decay`, see gmf_jax/train/ema.py) are `TrainState.ema`: {"params": ...,
**model_state}; `with_weights(state, "ema")` is the state with those in place of the live ones.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

import jax
import jax.numpy as jnp

WEIGHTS = ("live", "ema")


def _cast(tree: Any, dtype) -> Any:
  """Floating arrays of `tree` as `dtype`; other leaves as they are."""
  if dtype is None:
    return tree
  return jax.tree_util.tree_map(
      lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a, tree)


def bound_apply(apply_fn: Callable, model_state: dict[str, Any],
                updates: MutableMapping[str, Any] | None = None, *, compute_dtype=None
                ) -> Callable:
  """`apply_fn` with the model's state collections merged into the variables it is given.

  Args:
    apply_fn: the module's `apply`.
    model_state: {collection: tree}, the collections besides `params` (may be empty).
    updates: where a call with `train=True` leaves the updated collections (the last call's,
      if the loss calls the model more than once); None: the updates are dropped (a
      diagnostic that differentiates the training loss, say).
    compute_dtype: run the model in this dtype (mixed precision): its parameters and floating
      inputs are cast to it, its floating outputs cast back to float32. The state collections
      are not cast. None: as they are.

  Returns:
    `apply(variables, *args, **kwargs)`, called as the module's `apply` would be.
  """
  collections = list(model_state)

  def apply(variables, *args, **kwargs):
    variables = {**model_state, **variables}
    if compute_dtype is not None:
      variables["params"] = _cast(variables["params"], compute_dtype)
      args = _cast(args, compute_dtype)
    mutate = collections and kwargs.get("train") is True and "mutable" not in kwargs
    if mutate:
      out, new_state = apply_fn(variables, *args, mutable=collections, **kwargs)
      if updates is not None:
        updates.update(new_state)
    else:
      out = apply_fn(variables, *args, **kwargs)
    return out if compute_dtype is None else _cast(out, jnp.float32)

  return apply


def state_apply(state) -> Callable:
  """The model's `apply` with `state`'s collections (one member's TrainState): evaluation and
  diagnostics call `state_apply(state)({"params": state.params}, x, train=False)`."""
  return bound_apply(state.apply_fn, state.model_state)


def ema_parts(ema: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
  """Averaged weights {"params": ..., **model_state} as (params, model state)."""
  rest = dict(ema)
  return rest.pop("params"), rest


def with_weights(state, which: str):
  """`state` with the weights named by `which` ('live': as it is; 'ema': the averaged
  parameters and state collections) as its `params` and `model_state`."""
  if which == "live":
    return state
  if not state.ema:
    raise ValueError("with_weights('ema') needs a state with averaged weights (ema.decay set).")
  params, model_state = ema_parts(state.ema)
  return state.replace(params=params, model_state=model_state)


# Collections a model writes with `sow` (flax's convention): captured per call, not state.
_NOT_STATE = ("params", "intermediates")


def split_variables(variables) -> tuple[Any, dict[str, Any]]:
  """A model's variables as (params, the state collections: every other collection but
  `intermediates`)."""
  variables = dict(variables)
  state = {k: v for k, v in variables.items() if k not in _NOT_STATE}
  return variables.get("params", {}), state
