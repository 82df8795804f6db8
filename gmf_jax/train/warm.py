"""Compiling a population's programs for the smaller sizes it will shrink to, ahead of time.

A sweep's early termination shrinks a population at its rungs (`gmf_jax.train.actions.Shrink`),
and each new size needs programs of its own: the gathers, the training chunk, evaluation and
the best-state pick, about 3-4 s of XLA compilation per size for the MLP on a 2-core CPU.
`CompileAhead` compiles them in a background thread while the population still trains at its
current size, size by size, so JAX's persistent compilation cache holds them when the
population shrinks; the shrink waits for its size's compilation instead of compiling it a
second time beside it. It runs where an accelerator trains and the host's cores are free
(`worth_it`). The programs compiled here
lower to exactly what the real calls lower to (same shapes, dtypes, weak types and layouts), or
the cache would miss. It needs the cache (`compile_cache.dir`, on by default) and the train
split on the device; otherwise it does nothing. (Diagnostics compile when their population
starts, only those due before it may shrink: `ActionContext.horizon`.)
"""

from __future__ import annotations

import dataclasses
import logging
import threading

import jax
import jax.numpy as jnp
import numpy as np

from gmf_jax.train.mesh import make_layout

log = logging.getLogger("gmf_jax")


def layout_for(exp, size: int):
  """The layout a population of `size` members of `exp`'s program trains on: `exp`'s own,
  except with `mesh.members=0` on several devices, where the members axis is the most devices
  that divide `size` (the data axis takes the rest)."""
  if exp.config.mesh.members or exp.layout.mesh is None:
    return exp.layout
  return make_layout(exp.config.mesh, exp.config.batch_size, population=size)


def shapes(tree):
  """The shapes, dtypes, weak types and layouts of `tree`'s arrays (read them before a chunk
  donates the arrays)."""
  def shape(a):
    if isinstance(a, jax.ShapeDtypeStruct):
      return a
    if isinstance(a, jax.Array):  # on one device: no sharding (see `_resized`)
      sharding = a.sharding if isinstance(a.sharding, jax.sharding.NamedSharding) else None
      return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding,
                                  weak_type=a.aval.weak_type)
    a = np.asarray(a)
    return jax.ShapeDtypeStruct(a.shape, a.dtype)

  return jax.tree_util.tree_map(shape, tree)


def worth_it() -> bool:
  """Whether compiling ahead pays: where an accelerator trains, so the host's cores are free
  to compile. On a CPU the compilation takes the cores the training uses; measured on the
  2-core VM, a hyperband sweep of 27 MLPs took as long with it as without
  (benchmarks/RESULTS.md)."""
  return jax.default_backend() != "cpu"


class Ahead:
  """A jitted program compiled ahead, in a background thread (`start`), for the shapes it will
  be called with, while the training chunk compiles or runs. Calls use that executable (jit's
  own cache would tell committed arrays from uncommitted ones apart and compile again), or the
  jitted function where the arguments differ or the compilation failed. A call waits for the
  thread first, so nothing is compiled twice."""

  def __init__(self, jitted, name: str):
    self.jitted, self.name = jitted, name
    self._compiled = None
    self._thread: threading.Thread | None = None

  def start(self, *args_like) -> None:
    """Compiles for `args_like` (arrays or `jax.ShapeDtypeStruct`s: read now, never copied) in
    a daemon thread."""
    def work():
      try:
        self._compiled = self.jitted.lower(*args_like).compile()
      except Exception:  # noqa: BLE001 - the real call compiles (and raises) where it is made
        log.debug("compiling %s ahead failed", self.name, exc_info=True)

    self._thread = threading.Thread(target=work, name=f"gmf_jax-ahead-{self.name}", daemon=True)
    self._thread.start()

  def __call__(self, *args):
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    compiled = self._compiled
    if compiled is not None:
      try:
        return compiled(*args)
      except (TypeError, ValueError):  # not the shapes or layout it was compiled for
        log.debug("%s: compiling again for other arguments", self.name, exc_info=True)
        self._compiled = None
    return self.jitted(*args)


class CompileAhead:
  """Compiles, in a daemon thread, a population's programs at each of `sizes` in turn (each
  size's gathers from the size before it).

  Args:
    exp: the population's program.
    state_like: its state now, as `shapes` gives it.
    keys: its keys.
    data: the train split on the device (None: streamed; nothing is compiled).
    sizes: the sizes it is expected to shrink to, in order.
  """

  def __init__(self, exp, state_like, keys, data, sizes: list[int]):
    self.ready = {size: threading.Event() for size in sizes}
    if (data is None or not sizes or not jax.config.jax_compilation_cache_dir
        or not worth_it()):
      for event in self.ready.values():
        event.set()
      return
    keys_like, data_like = shapes(keys), shapes(data)

    def work():
      before = state_like, keys_like
      try:
        for size in sizes:
          before = _compile_size(exp, *before, data_like, size)
          self.ready[size].set()
      except Exception:  # noqa: BLE001 - the real call compiles (and raises) where it is made
        log.debug("compiling ahead for a smaller population failed", exc_info=True)
      finally:
        for event in self.ready.values():
          event.set()

    threading.Thread(target=work, name="gmf_jax-compile-ahead", daemon=True).start()

  def wait(self, size: int) -> None:
    """Waits for `size`'s programs, where they are being compiled (else returns at once)."""
    event = self.ready.get(size)
    if event is not None:
      event.wait()


def _compile_size(exp, state_like, keys_like, data_like, size: int):
  """Compiles the programs of a population of `size` that shrank from `state_like`'s; returns
  the new size's abstract state and keys."""
  programs, state, keys = lowered(exp, state_like, keys_like, data_like, size)
  for program in programs.values():
    program.compile()
  return state, keys


def lowered(exp, state_like, keys_like, data_like, size: int):
  """({name: the lowered program}, abstract state, abstract keys) of a population of `size`
  that shrank from `state_like`'s: the gather, the training chunk, evaluation and the pick."""
  from gmf_jax.members import _take
  from gmf_jax.train.chunks import device_chunk_fn
  from gmf_jax.train.evaluation import _pick, eval_weights, make_eval_fn
  from gmf_jax.train.pipeline import padded_eval_data

  index = jax.ShapeDtypeStruct((size,), jnp.int32)
  programs = {"gather": _take.lower(state_like.replace(step=None), index)}
  exp = dataclasses.replace(exp, layout=layout_for(exp, size))
  layout = exp.layout
  state = _resized(state_like, size, layout.population(_resized(state_like, size, None)))
  step = state_like.step
  state = state.replace(step=jax.ShapeDtypeStruct(
      step.shape, step.dtype, weak_type=step.weak_type,
      sharding=None if layout.mesh is None else layout.replicated))
  keys = _resized(keys_like, size, None if layout.mesh is None else layout.member_axis)
  programs["chunk"] = device_chunk_fn(exp, state, size).lower(
      state, keys, _placed(data_like, layout), np.int32(0))
  eval_size = min(exp.config.eval_batch_size, len(exp.dataset.test))
  eval_data = _placed(shapes(padded_eval_data(exp.dataset.test, eval_size)), layout)
  programs["evaluation"] = make_eval_fn(exp, size, eval_size).lower(
      eval_weights(state), state.hparams, keys, *eval_data)
  members = state.replace(step=None)
  programs["pick"] = _pick.lower(members, members, jax.ShapeDtypeStruct((size,), bool))
  return programs, state, keys


def _resized(tree, size: int, shardings):
  """`tree`'s shapes with a member axis of `size` (a state's shared step counter left out),
  laid out by `shardings` (a tree like it, one sharding, or None: one device, as arrays that
  were never placed explicitly, which lower to the same program)."""
  step = getattr(tree, "step", None)
  if step is not None:
    tree = tree.replace(step=None)
    shardings = shardings.replace(step=None) if hasattr(shardings, "replace") else shardings

  def one(a, sharding=None):
    return jax.ShapeDtypeStruct((size, *a.shape[1:]), a.dtype, sharding=sharding,
                                weak_type=a.weak_type)

  if shardings is None or isinstance(shardings, jax.sharding.Sharding):
    out = jax.tree_util.tree_map(lambda a: one(a, shardings), tree)
  else:
    out = jax.tree_util.tree_map(one, tree, shardings)
  return out if step is None else out.replace(step=step)


def _placed(tree, layout):
  """Shapes of `tree` as `layout.put` places them."""
  sharding = None if layout.mesh is None else layout.replicated
  return jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)
