"""The pure core: one train step, a `lax.scan` chunk of steps, and evaluation.

Everything here is a pure function of arrays, so a later layer can `jax.vmap` the chunk over
seeds (a leading axis on `state` and `keys`) or `jit` it with shardings.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class RunKeys(NamedTuple):
  """The run's random keys, each derived from the seed; per-step keys fold in the step."""

  init: jax.Array
  train: jax.Array
  data: jax.Array
  eval: jax.Array
  diag: jax.Array


def make_keys(seed: int) -> RunKeys:
  root = jax.random.PRNGKey(seed)
  return RunKeys(*(jax.random.fold_in(root, i) for i in range(5)))


def train_step(
    state: TrainState, batch: Batch, rng: jax.Array, loss_fn
) -> tuple[TrainState, Metrics]:
  """One optimizer step. `loss_fn(params, apply_fn, batch, rng, train)` -> (loss, metrics).

  Returns the new state and scalar metrics: `loss`, the loss's own metrics and `grad_norm`.
  A step is finite when `loss` and `grad_norm` are (the host checks, once per chunk).
  """
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, state.apply_fn, batch, rng, True
  )
  grad_norm = global_norm(grads)
  state = state.apply_gradients(grads=grads)
  return state, {"loss": loss, **aux, "grad_norm": grad_norm}


# Up to this many elements, a global norm is one concatenation and one dot product: two
# operations per step instead of a reduction per leaf, which small models feel (each operation
# has a fixed cost on CPU). Larger trees skip the copy and reduce leaf by leaf.
_CONCAT_NORM_MAX = 1 << 20


def global_norm(tree: Any) -> jax.Array:
  """The L2 norm of all leaves of `tree` together, in float32."""
  leaves = [jnp.ravel(leaf).astype(jnp.float32) for leaf in jax.tree_util.tree_leaves(tree)]
  if sum(leaf.size for leaf in leaves) > _CONCAT_NORM_MAX:
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in leaves))
  flat = jnp.concatenate(leaves)
  return jnp.sqrt(jnp.dot(flat, flat, precision=jax.lax.Precision.HIGHEST))


StepFn = Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]


def make_train_step(loss_fn) -> StepFn:
  """`train_step` with the loss bound: `(state, batch, rng) -> (state, metrics)`, pure."""
  return functools.partial(train_step, loss_fn=loss_fn)


def epoch_permutation(data_key: jax.Array, epoch: jax.Array, num_examples: int) -> jax.Array:
  """The order of the training examples in `epoch`: a function of the seed and epoch only."""
  return jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)


def _run_steps(step_fn, carry, length: int, num_active: jax.Array, xs=None):
  """`lax.scan` of `step_fn(carry, x) -> (carry, metrics)` over `length` slots, stepping only
  the first `num_active`.

  The chunk length is a traced value, so every chunk length shares one compiled program (chunks
  end early at evaluation, checkpoint and diagnostic steps). Each step's scalar metrics are
  written as one float32 row: one update per step, whatever the number of metrics (each
  operation in the loop has a fixed cost, which small models feel). `xs`, if given, has a
  leading axis of `length`; slot i gets `xs[i]`.

  Returns:
    The carry after `num_active` steps, and each metric stacked along a leading axis of
    `length` (zeros in the idle slots).
  """
  x0 = None if xs is None else jax.tree_util.tree_map(lambda a: a[0], xs)
  shapes = jax.eval_shape(step_fn, carry, x0)[1]
  bad = {k: s.shape for k, s in shapes.items() if s.shape != ()}
  if bad:
    raise ValueError(f"train-step metrics must be scalars; got shapes {bad}. Return means "
                     "(or other scalar summaries) from the loss.")
  names = sorted(shapes)

  def active(carry, x):
    carry, metrics = step_fn(carry, x)
    return carry, jnp.stack([jnp.asarray(metrics[k], jnp.float32) for k in names])

  def idle(carry, x):
    return carry, jnp.zeros((len(names),), jnp.float32)

  def body(carry, inputs):
    i, x = inputs
    return jax.lax.cond(i < num_active, active, idle, carry, x)

  carry, rows = jax.lax.scan(body, carry, (jnp.arange(length), xs))
  return carry, {k: rows[:, j] for j, k in enumerate(names)}


def train_chunk_on_device(state: TrainState, keys: RunKeys, data: Batch, num_active: jax.Array,
                          *, loss_fn, batch_size: int, num_steps: int
                          ) -> tuple[TrainState, Metrics]:
  """Up to `num_steps` steps (the first `num_active`) over a dataset held on the device.

  Batches are drawn without replacement from a per-epoch permutation; the last incomplete
  batch of an epoch is dropped. Batch order and step keys depend only on `state.step`, so
  chunk sizes and restarts do not change the result.

  Returns:
    The new state and per-step metrics stacked along a leading axis of length num_steps
    (only the first `num_active` rows are real).
  """
  num_examples = jax.tree_util.tree_leaves(data)[0].shape[0]
  steps_per_epoch = num_examples // batch_size

  def step_fn(carry, _):
    state, perm = carry
    step = state.step
    epoch, position = step // steps_per_epoch, step % steps_per_epoch
    perm = jax.lax.cond(
        position == 0,
        lambda: epoch_permutation(keys.data, epoch, num_examples),
        lambda: perm,
    )
    idx = jax.lax.dynamic_slice_in_dim(perm, position * batch_size, batch_size)  # (B,)
    batch = jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0), data)
    state, metrics = train_step(state, batch, jax.random.fold_in(keys.train, step), loss_fn)
    return (state, perm), metrics

  perm = epoch_permutation(keys.data, state.step // steps_per_epoch, num_examples)
  (state, _), metrics = _run_steps(step_fn, (state, perm), num_steps, num_active)
  return state, metrics


def train_chunk_on_batches(state: TrainState, keys: RunKeys, batches: Batch,
                           num_active: jax.Array, *, loss_fn) -> tuple[TrainState, Metrics]:
  """Steps over batches streamed from the host, stacked as (num_steps, B, ...); the first
  `num_active` are real."""

  def step_fn(state, batch):
    return train_step(state, batch, jax.random.fold_in(keys.train, state.step), loss_fn)

  length = jax.tree_util.tree_leaves(batches)[0].shape[0]
  return _run_steps(step_fn, state, length, num_active, xs=batches)


def evaluate(params: Any, apply_fn, keys: RunKeys, data: Batch, mask: jax.Array, *,
             per_example_fn, batch_size: int) -> Metrics:
  """Means of per-example metrics over a padded split: data (N_pad, ...), mask (N_pad,).

  The same keys are used at every evaluation, so evaluations differ only by the parameters.
  """
  num_batches = mask.shape[0] // batch_size
  batched = jax.tree_util.tree_map(
      lambda a: a.reshape((num_batches, batch_size, *a.shape[1:])), data
  )
  masks = mask.reshape((num_batches, batch_size))

  def body(totals, inputs):
    i, batch, m = inputs
    per = per_example_fn(params, apply_fn, batch, jax.random.fold_in(keys.eval, i))
    sums = {k: jnp.sum(jnp.where(m, v, 0.0)) for k, v in per.items()}
    return jax.tree_util.tree_map(jnp.add, totals, sums), None

  shapes = jax.eval_shape(
      functools.partial(per_example_fn, params, apply_fn),
      jax.tree_util.tree_map(lambda a: a[0], batched), keys.eval,
  )
  zeros = {k: jnp.zeros((), jnp.float32) for k in shapes}
  totals, _ = jax.lax.scan(body, zeros, (jnp.arange(num_batches), batched, masks))
  count = jnp.sum(mask)
  return {k: v / count for k, v in totals.items()}
