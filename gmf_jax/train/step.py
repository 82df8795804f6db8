"""The pure core: one train step, a `lax.scan` chunk of steps, and evaluation.

Everything here is a pure function of arrays. The hyperparameters are arrays too
(`TrainState.hparams`, see gmf_jax.train.hparams): the loss and the optimizer are rebuilt from
them inside the step (`loss_for(hparams)`, `tx_for(hparams)`), so one compiled program serves
every value, and `population_chunk` vmaps a chunk over the members of a population (a leading
member axis on the state, except the shared step counter, and on the keys).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training import train_state

from gmf_jax.data.order import epoch_permutation
from gmf_jax.members import member, with_member_axis
from gmf_jax.models import variables
from gmf_jax.train import ema as ema_lib
from gmf_jax.train import precision

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class TrainState(train_state.TrainState):
  """flax's TrainState with the run's hyperparameters as arrays (config key -> array), the
  model's own state and the run's averaged weights and loss scale.

  `tx` (static) is the optimizer built from the concrete values, for `init`; the step uses
  `tx_for(hparams)`, so the values in `hparams` are the ones that train. The other fields are
  empty dicts when unused (no leaves: nothing stored, nothing computed):
  - `model_state`: the model's collections besides `params` ({"batch_stats": ...} for
    BatchNorm), updated by the train step (see gmf_jax.models.variables);
  - `ema`: the averaged weights, {"params": ..., **model_state} (`ema.decay`);
  - `loss_scale`: float16's dynamic loss scale (see gmf_jax.train.precision).
  """

  hparams: dict[str, jax.Array]
  model_state: dict[str, Any] = struct.field(default_factory=dict)
  ema: dict[str, Any] = struct.field(default_factory=dict)
  loss_scale: dict[str, jax.Array] = struct.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """The parts of a train step beyond the loss and the optimizer (part of the program).

  Attributes:
    augment: the batch augmentation (gmf_jax.train.augment.Augment), or None.
    compute_dtype: the dtype the model computes in (None: float32; see train/precision.py).
    loss_scaling: float16's dynamic loss scaling, with overflowed steps skipped.
    accumulate_steps: micro-batches per optimizer step (`optimizer.accumulate_steps`).
    ema: keep averaged weights, with decay `hparams["ema.decay"]`.
  """

  augment: Callable | None = None
  compute_dtype: Any = None
  loss_scaling: bool = False
  accumulate_steps: int = 1
  ema: bool = False


EMA_DECAY = "ema.decay"
_DEFAULT_OPTIONS = StepOptions()


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


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *, loss_for, tx_for,
               options: StepOptions = _DEFAULT_OPTIONS) -> tuple[TrainState, Metrics]:
  """One optimizer step.

  `loss_for(hparams)(params, apply_fn, batch, rng, train)` -> (loss, metrics), and
  `tx_for(hparams)` -> the optax transformation, both of the state's hyperparameters.
  `options` adds augmentation, mixed precision, gradient accumulation and averaged weights.

  With `accumulate_steps` = k > 1 the batch (B, ...) is split into k micro-batches of B / k
  (in order: examples [i B/k, (i+1) B/k) make micro-batch i), each with the step's key folded
  with i; their gradients and metrics are averaged, and one update is applied: for a loss that
  is a mean over examples, the same update as one step on the whole batch. The model's state
  collections are updated micro-batch after micro-batch.

  Returns the new state and scalar metrics: `loss`, the loss's own metrics and `grad_norm`
  (plus `skipped` and `loss_scale` with float16's loss scaling).
  A step is finite when `loss` and `grad_norm` are (the host checks, once per chunk).
  """
  if options.augment is not None:
    batch = options.augment(rng, batch, state.hparams)
  loss_fn = loss_for(state.hparams)
  scale = state.loss_scale["scale"] if options.loss_scaling else None
  k = options.accumulate_steps
  if k == 1:
    grads, (loss, aux, model_state) = _gradients(state, state.model_state, batch, rng, loss_fn,
                                                 options, scale)
  else:
    grads, (loss, aux, model_state) = _accumulated(state, batch, rng, loss_fn, options, scale, k)
  metrics = {}
  if scale is not None:
    grads = jax.tree_util.tree_map(lambda g: g / scale, grads)
    finite = precision.all_finite(grads)
    metrics = {"skipped": (~finite).astype(jnp.float32), "loss_scale": scale}
  grad_norm = global_norm(grads)
  updates, opt_state = tx_for(state.hparams).update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new = dict(params=params, opt_state=opt_state, model_state=model_state)
  if scale is not None:  # an overflowed step leaves everything as it was
    old = dict(params=state.params, opt_state=state.opt_state, model_state=state.model_state)
    new = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)
    new["loss_scale"] = precision.next_loss_scale(state.loss_scale, finite)
  if options.ema:
    ema = ema_lib.ema_update(state.ema, new["params"], new["model_state"],
                             state.hparams[EMA_DECAY])
    new["ema"] = ema if scale is None else jax.tree_util.tree_map(
        lambda n, o: jnp.where(finite, n, o), ema, state.ema)
  state = state.replace(step=state.step + 1, **new)
  return state, {"loss": loss, **aux, "grad_norm": grad_norm, **metrics}


def _gradients(state, model_state, batch, rng, loss_fn, options, scale):
  """Gradients of the loss on `batch` (scaled by `scale`, if given), with (loss, metrics,
  updated model state)."""

  def objective(params):
    updates = {}
    apply = variables.bound_apply(state.apply_fn, model_state, updates,
                                compute_dtype=options.compute_dtype)
    loss, aux = loss_fn(params, apply, batch, rng, True)
    new_state = {**model_state, **updates}
    return (loss if scale is None else loss * scale), (loss, aux, new_state)

  grads, out = jax.grad(objective, has_aux=True)(state.params)
  return grads, out


def _accumulated(state, batch, rng, loss_fn, options, scale, k):
  """`_gradients` averaged over k micro-batches of the batch, in one `lax.scan`."""
  micro = jax.tree_util.tree_map(lambda a: a.reshape((k, a.shape[0] // k, *a.shape[1:])), batch)

  def body(carry, inputs):
    total, model_state = carry
    i, part = inputs
    grads, (loss, aux, model_state) = _gradients(state, model_state, part,
                                                 jax.random.fold_in(rng, i), loss_fn, options,
                                                 scale)
    total = jax.tree_util.tree_map(jnp.add, total, (grads, loss, aux))
    return (total, model_state), None

  shapes = jax.eval_shape(
      lambda: _gradients(state, state.model_state, jax.tree_util.tree_map(lambda a: a[0], micro),
                         rng, loss_fn, options, scale))
  zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                 (shapes[0], shapes[1][0], shapes[1][1]))
  (total, model_state), _ = jax.lax.scan(body, (zeros, state.model_state),
                                         (jnp.arange(k), micro))
  grads, loss, aux = jax.tree_util.tree_map(lambda t: t / k, total)
  return grads, (loss, aux, model_state)


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


def make_train_step(loss_for, tx_for, options: StepOptions = _DEFAULT_OPTIONS) -> StepFn:
  """`train_step` with the loss and optimizer bound: `(state, batch, rng) -> (state, metrics)`,
  pure."""
  return functools.partial(train_step, loss_for=loss_for, tx_for=tx_for, options=options)


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
                          batch_sharding=None, options: StepOptions = _DEFAULT_OPTIONS
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
    state, perm, first = carry
    step = state.step
    epoch, position = step // steps_per_epoch, step % steps_per_epoch
    # The epoch's order is drawn at its first step, and at the chunk's first (which may start
    # mid-epoch). Drawn here alone, the permutation's program is compiled once, not also before
    # the loop; `first` and the step are shared by the members, so a vmap keeps this a branch.
    perm = jax.lax.cond(
        (position == 0) | first,
        lambda: epoch_permutation(keys.data, epoch, num_examples),
        lambda: perm,
    )
    idx = jax.lax.dynamic_slice_in_dim(perm, position * batch_size, batch_size)  # (B,)
    batch = jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0), data)
    batch = _constrain(batch, batch_sharding)  # data parallel: each device its part of B
    state, metrics = train_step(state, batch, jax.random.fold_in(keys.train, step),
                                loss_for=loss_for, tx_for=tx_for, options=options)
    return (state, perm, jnp.zeros((), bool)), metrics

  unset = jnp.zeros((num_examples,), jnp.int32)
  (state, _, _), metrics = _run_steps(step_fn, (state, unset, jnp.ones((), bool)), num_steps,
                                      num_active)
  return state, metrics


def train_chunk_on_batches(state: TrainState, keys: RunKeys, batches: Batch,
                           num_active: jax.Array, *, loss_for, tx_for, batch_sharding=None,
                           options: StepOptions = _DEFAULT_OPTIONS
                           ) -> tuple[TrainState, Metrics]:
  """Steps over batches streamed from the host, stacked as (num_steps, B, ...); the first
  `num_active` are real."""

  def step_fn(state, batch):
    batch = _constrain(batch, batch_sharding)
    return train_step(state, batch, jax.random.fold_in(keys.train, state.step),
                      loss_for=loss_for, tx_for=tx_for, options=options)

  length = jax.tree_util.tree_leaves(batches)[0].shape[0]
  return _run_steps(step_fn, state, length, num_active, xs=batches)


def evaluate(params: Any, hparams: dict[str, jax.Array], keys: RunKeys, data: Batch,
             mask: jax.Array, *, apply_fn, loss_for, batch_size: int,
             batch_sharding=None, model_state: dict[str, Any] | None = None,
             compute_dtype=None) -> Metrics:
  """Means of per-example metrics over a padded split: data (N_pad, ...), mask (N_pad,).

  `model_state`: the model's collections besides `params`, used as they are (nothing is
  updated); `compute_dtype`: the dtype the model runs in (mixed precision).

  The same keys are used at every evaluation, so evaluations differ only by the parameters.
  With `batch_sharding`, each batch is split over the `data` devices (each evaluates its part).
  """
  per_example_fn = loss_for(hparams).per_example
  apply_fn = variables.bound_apply(apply_fn, model_state or {}, compute_dtype=compute_dtype)
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
