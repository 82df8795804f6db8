"""Evaluation and the best checkpoint: two periodic actions over the whole population.

Evaluation runs every member on the test split in one jitted program over the member axis and
brings the results to the host in one transfer. The best checkpoint keeps each member's best
state so far on the device, picked in one jitted program from the members evaluation found
improved, and saves it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gmf_jax import failpoints
from gmf_jax.models.variables import ema_parts
from gmf_jax.train import warm
from gmf_jax.train.actions import PeriodicAction, Schedule, Tick
from gmf_jax.train.pipeline import padded_eval_data
from gmf_jax.train.step import evaluate


def eval_schedule(exp) -> Schedule:
  return Schedule.make(exp.num_steps, every=exp.config.eval_every_steps)


def make_eval_fn(exp, size: int, batch_size: int):
  """`eval_fn(weights, hparams, keys, data, mask)` -> {name: (members,)}, jitted; `weights` is
  `eval_weights(state)`. Each weights of `exp.evaluated` is evaluated: the live ones as
  `<name>`, the averaged ones as `ema/<name>`. Each batch is split over the `data` devices when
  it divides evenly (else each device evaluates it all)."""
  layout = exp.layout
  split = layout.batch if batch_size % layout.data == 0 else None
  single = functools.partial(evaluate, apply_fn=exp.model.apply, loss_for=exp.loss_for,
                             batch_size=batch_size, batch_sharding=split,
                             compute_dtype=exp.step.compute_dtype)
  first = lambda tree: jax.tree_util.tree_map(lambda a: a[0], tree)

  def member_evals(w, h, k, d, m):
    out = {}
    for which in exp.evaluated:
      if which == "live":
        out.update(single(w["params"], h, k, d, m, model_state=w["model_state"]))
      else:
        params, model_state = ema_parts(w["ema"])
        got = single(params, h, k, d, m, model_state=model_state)
        out.update({f"ema/{name}": v for name, v in got.items()})
    return out

  def evaluate_one(w, h, k, d, m):  # the name shows in the compilation cache
    return jax.tree_util.tree_map(lambda a: a[None], member_evals(first(w), first(h), first(k),
                                                                  d, m))

  def evaluate_members(w, h, k, d, m):
    return jax.vmap(member_evals, in_axes=(0, 0, 0, None, None),
                    spmd_axis_name=layout.spmd_axis)(w, h, k, d, m)

  shardings = {} if layout.mesh is None else {"out_shardings": layout.member_axis}
  return jax.jit(evaluate_one if size == 1 else evaluate_members, **shardings)


def eval_weights(state) -> dict:
  """What evaluation reads of a (population's) state: the live weights and the averaged."""
  return {"params": state.params, "model_state": state.model_state, "ema": state.ema}


def make_evaluation(context) -> PeriodicAction:
  """Evaluates every member on the test split and says which members reached their best value
  (`tick.improved`); the record writes each member's `eval/*` rows once the next chunk is
  queued."""
  exp = context.exp
  # Not rounded to the devices: the batches (and each batch's key) never depend on the layout.
  eval_size = min(exp.config.eval_batch_size, len(exp.dataset.test))
  data, mask = exp.layout.put(padded_eval_data(exp.dataset.test, eval_size))
  eval_fn = warm.Ahead(make_eval_fn(exp, context.size, eval_size), "evaluation")
  like = warm.shapes((eval_weights(context.state), context.state.hparams))  # before donation

  def prepare() -> None:  # compiled beside the first chunk
    eval_fn.start(*like, context.keys, data, mask)

  def run(tick: Tick) -> None:
    failpoints.reach("eval")
    state, step = tick.state, tick.step
    evals = jax.device_get(eval_fn(eval_weights(state), state.hparams, context.keys, data,
                                   mask))
    tick.evals = evals
    tick.improved = context.record.improved(evals)
    tick.defer(lambda: context.record.record_eval(step, evals))  # the rows, while training

  return PeriodicAction("evaluation", eval_schedule(exp), run, prepare=prepare)


def make_best_checkpoint(context) -> PeriodicAction:
  """Keeps each member's best state so far on the device, picked in one program from the
  members evaluation found improved, so one checkpoint holds every member's best. The store
  writes it with the next checkpoint (periodic, at the last step, at a stop) or, for a run that
  failed, at its close (`PopulationCheckpoints.keep_best`)."""
  best = BestStates(context.store.restore_best(context.state) if context.start_step else None)
  members = warm.shapes(context.state.replace(step=None))  # before the first chunk donates it

  def prepare() -> None:  # compiled beside the first chunk
    best.pick.start(members, members, jax.ShapeDtypeStruct((context.size,), bool))

  def run(tick: Tick) -> None:
    if tick.improved is None or not tick.improved.any():
      return
    context.store.keep_best(tick.step, best.update(tick.state, tick.improved),
                            context.record.windows())

  return PeriodicAction("best_checkpoint", eval_schedule(context.exp), run, prepare=prepare)


class BestStates:
  """Each member's best state so far, on the device; `update` picks it in one program."""

  def __init__(self, restored=None):
    self.state = restored  # None until the first evaluation (or a host copy from a resume)
    self.pick = warm.Ahead(_pick, "best_pick")

  def update(self, state, improved: np.ndarray):
    step = state.step
    now = state.replace(step=None)
    best = now if self.state is None else self.state.replace(step=None)
    mask = np.asarray(improved) if self.state is not None else np.ones_like(improved)
    # Every array its own (the tick's state goes to the next chunk): the step copied too.
    self.state = self.pick(best, now, mask).replace(step=jnp.copy(step))
    return self.state


@jax.jit
def _pick(best, now, improved):
  """Per member: `now` where improved, else `best` (leaves with a leading member axis)."""
  def one(b, n):
    return jnp.where(improved.reshape((-1,) + (1,) * (n.ndim - 1)), n, b)

  return jax.tree_util.tree_map(one, best, now)
