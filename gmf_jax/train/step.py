"""The pure core: one train step, a `lax.scan` chunk of steps, and evaluation.

Everything here is a pure function of arrays. The hyperparameters are arrays too
(`TrainState.hparams`, see gmf_jax.train.hparams): the loss and the optimizer are rebuilt from
them inside the step (`loss_for(hparams)`, `tx_for(hparams)`), so one compiled program serves
every value, and `population_chunk` vmaps a chunk over the members of a population (a leading
member axis on the state, except the shared step counter, and on the keys).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from gmf_jax.data.order import epoch_permutation
from gmf_jax.members import member, with_member_axis

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class TrainState(train_state.TrainState):
  """flax's TrainState with the run's hyperparameters as arrays (config key -> array).

  `tx` (static) is the optimizer built from the concrete values, for `init`; the step uses
  `tx_for(hparams)`, so the values in `hparams` are the ones that train.
  """

  hparams: dict[str, jax.Array]


class RunKeys(NamedTuple):
  """The run's random keys, each derived from the seed; per-step keys fold in the step."""

  init: jax.Array
  train: jax.Array
  data: jax.Array
  eval: jax.Array
  diag: jax.Array


def make_keys(seed: int, data_seed: int | None = None) -> RunKeys:
  """The run's keys from its seed; `data_seed`, if given, sets the data order instead (members
  of a population that share it see the same batches: a paired design)."""
  root = jax.random.PRNGKey(seed)
  keys = RunKeys(*(jax.random.fold_in(root, i) for i in range(5)))
  if data_seed is not None:
    keys = keys._replace(data=make_keys(data_seed).data)
  return keys


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *, loss_for, tx_for
               ) -> tuple[TrainState, Metrics]:
  """One optimizer step.

  `loss_for(hparams)(params, apply_fn, batch, rng, train)` -> (loss, metrics), and
  `tx_for(hparams)` -> the optax transformation, both of the state's hyperparameters.

  Returns the new state and scalar metrics: `loss`, the loss's own metrics and `grad_norm`.
  A step is finite when `loss` and `grad_norm` are (the host checks, once per chunk).
  """
  loss_fn = loss_for(state.hparams)
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, state.apply_fn, batch, rng, True
  )
  grad_norm = global_norm(grads)
  updates, opt_state = tx_for(state.hparams).update(grads, state.opt_state, state.params)
  state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                        opt_state=opt_state)
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


def make_train_step(loss_for, tx_for) -> StepFn:
  """`train_step` with the loss and optimizer bound: `(state, batch, rng) -> (state, metrics)`,
  pure."""
  return functools.partial(train_step, loss_for=loss_for, tx_for=tx_for)


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


def _constrain(batch: Batch, sharding) -> Batch:
  """The batch split over the devices of `sharding` (None: one device, left as it is)."""
  return batch if sharding is None else jax.lax.with_sharding_constraint(batch, sharding)


def train_chunk_on_device(state: TrainState, keys: RunKeys, data: Batch, num_active: jax.Array,
                          *, loss_for, tx_for, batch_size: int, num_steps: int,
                          batch_sharding=None) -> tuple[TrainState, Metrics]:
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
    batch = _constrain(batch, batch_sharding)  # data parallel: each device its part of B
    state, metrics = train_step(state, batch, jax.random.fold_in(keys.train, step),
                                loss_for=loss_for, tx_for=tx_for)
    return (state, perm), metrics

  perm = epoch_permutation(keys.data, state.step // steps_per_epoch, num_examples)
  (state, _), metrics = _run_steps(step_fn, (state, perm), num_steps, num_active)
  return state, metrics


def train_chunk_on_batches(state: TrainState, keys: RunKeys, batches: Batch,
                           num_active: jax.Array, *, loss_for, tx_for, batch_sharding=None
                           ) -> tuple[TrainState, Metrics]:
  """Steps over batches streamed from the host, stacked as (num_steps, B, ...); the first
  `num_active` are real."""

  def step_fn(state, batch):
    batch = _constrain(batch, batch_sharding)
    return train_step(state, batch, jax.random.fold_in(keys.train, state.step),
                      loss_for=loss_for, tx_for=tx_for)

  length = jax.tree_util.tree_leaves(batches)[0].shape[0]
  return _run_steps(step_fn, state, length, num_active, xs=batches)


def evaluate(params: Any, hparams: dict[str, jax.Array], keys: RunKeys, data: Batch,
             mask: jax.Array, *, apply_fn, loss_for, batch_size: int,
             batch_sharding=None) -> Metrics:
  """Means of per-example metrics over a padded split: data (N_pad, ...), mask (N_pad,).

  The same keys are used at every evaluation, so evaluations differ only by the parameters.
  With `batch_sharding`, each batch is split over the `data` devices (each evaluates its part).
  """
  per_example_fn = loss_for(hparams).per_example
  num_batches = mask.shape[0] // batch_size
  batched = jax.tree_util.tree_map(
      lambda a: a.reshape((num_batches, batch_size, *a.shape[1:])), data
  )
  masks = mask.reshape((num_batches, batch_size))

  def body(totals, inputs):
    i, batch, m = inputs
    batch, m = _constrain((batch, m), batch_sharding)
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


def member_axes(state: TrainState) -> TrainState:
  """vmap axes of a population's state: every leaf has a leading member axis, except the
  step counter, which members share (they step together), so the per-epoch `lax.cond` stays
  a branch instead of a select that would permute the dataset at every step."""
  return jax.tree_util.tree_map(lambda _: 0, state).replace(step=None)


def population_chunk(chunk: Callable, state_like: TrainState, size: int, *,
                     shared_data: bool = True, spmd_axis_name: str | None = None) -> Callable:
  """`chunk(state, keys, data, num_active)` for a population of `size` members.

  The state and keys have a leading member axis; `data` is shared (`shared_data`) or has a
  member axis too (streamed batches in each member's order). A population of one calls
  `chunk` on the member itself, so a single run computes exactly what it always did.
  `spmd_axis_name`: the mesh axis the members are split over (see train/mesh.py), if any.
  """
  if size == 1:
    def one(state, keys, data, num_active):
      first = lambda tree: jax.tree_util.tree_map(lambda a: a[0], tree)
      data = data if shared_data else first(data)
      out_state, metrics = chunk(member(state, 0), first(keys), data, num_active)
      return with_member_axis(out_state), jax.tree_util.tree_map(lambda a: a[None], metrics)
    inner = getattr(chunk, "func", chunk)  # compiled programs keep the chunk's name
    one.__name__ = one.__qualname__ = getattr(inner, "__name__", "train_chunk")
    return one
  axes = member_axes(state_like)
  return jax.vmap(chunk, in_axes=(axes, 0, None if shared_data else 0, None),
                  out_axes=(axes, 0), axis_size=size, spmd_axis_name=spmd_axis_name)
