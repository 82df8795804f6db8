"""Running due diagnostics over a population's members between jitted calls, and writing what
they return.

`PopulationDiagnostics.run` computes each due diagnostic for every member in one jitted call,
vmapped over the member axis (a population of one calls `compute` on the member itself, so a
single run computes what it always did), brings each result to the host in one transfer, then
writes each member's rows, npz and figures. An old-form diagnostic (a plain callable returning
a `DiagnosticResult`) runs once per member instead, on the member's sliced state.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import logging
import os
import threading
import time
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gmf_jax.diagnostics import ScheduledDiagnostic
from gmf_jax.diagnostics.base import Diagnostic, DiagnosticResult, PopulationDiagnostic
from gmf_jax.members import member
from gmf_jax.models.variables import with_weights
from gmf_jax.runlog.plots import save_png
from gmf_jax.runlog.writers import RowBuffer, rewrite_metrics

log = logging.getLogger("gmf_jax")

DIAG_DIR = "diagnostics"


def probe_batch(exp, size: int) -> dict[str, jax.Array]:
  """The fixed probe: the first `size` examples of the test split, the same at every call."""
  split = exp.dataset.test
  return jax.device_put(dict(split.get(np.arange(min(size, len(split))))))


def _name_hash(name: str) -> np.uint32:
  return np.uint32(zlib.crc32(name.encode()) & 0x7FFFFFFF)


def diagnostic_rng(diag_key: jax.Array, name: str, step: int) -> jax.Array:
  """A key per (diagnostic, step), so a backfill reproduces what ran during training."""
  return _fold_twice(diag_key, _name_hash(name), np.uint32(step))


@jax.jit
def _fold_twice(key, a, b):  # one dispatch instead of two eager ones (bitwise the same)
  return jax.random.fold_in(jax.random.fold_in(key, a), b)


@dataclasses.dataclass
class Target:
  """One member's place to write its diagnostics."""

  index: int  # the member's index on the state's member axis
  workdir: str  # the member's run folder
  writer: Any  # .write(step, {name: float}): metrics.csv, summary, wandb
  image_writer: Any = None  # .write_images(step, {name: png path}), or None


class _Program:
  """One diagnostic's `compute`, with its key derived inside, jitted over the member axis."""

  def __init__(self, name: str, diagnostic: Diagnostic, size: int, weights: str = "live"):
    self.order: tuple[list[str], list[str]] | None = None  # the keys as compute returned them
    name_hash = _name_hash(name)

    def one(state, probe, key, step):
      rng = jax.random.fold_in(jax.random.fold_in(key, name_hash), step)  # diagnostic_rng's
      scalars, arrays = diagnostic.compute(with_weights(state, weights), probe, rng)
      # Traced once: jit hands dicts back sorted by key, and files keep compute's own order.
      self.order = (list(scalars), list(arrays))
      return dict(scalars), dict(arrays)

    if size == 1:  # the member itself, unbatched: a single run computes what it always did
      def program(state, probe, keys, step):
        out = one(member(state, 0), probe, keys[0], step)
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a)[None], out)
    else:
      def program(state, probe, keys, step):
        axes = jax.tree_util.tree_map(lambda _: 0, state).replace(step=None)  # step: shared
        return jax.vmap(one, in_axes=(axes, None, 0, None))(state, probe, keys, step)
    program.__name__ = program.__qualname__ = f"diagnostic_{name}"  # named so in profiles
    self._jitted = jax.jit(program)
    self._compiled = None  # from the warm-up

  def __call__(self, state, probe, keys, step: int):
    """{key: (members, ...)} scalars and arrays, on the device (dispatched, not waited for)."""
    args = (state, probe, keys, np.uint32(step))
    if self._compiled is not None:
      # The warm-up's executable takes the state whether or not its arrays are committed to a
      # device (jit's own cache would tell those apart, and compile again).
      try:
        return self._compiled(*args)
      except (TypeError, ValueError):  # other shapes than it was compiled for
        log.debug("diagnostic program %s: compiling again", self._jitted, exc_info=True)
        self._compiled = None
    return self._jitted(*args)

  def compile(self, state_like, probe, keys) -> None:
    """Traces and compiles for these shapes (`jax.ShapeDtypeStruct`s) and keeps the program."""
    self._compiled = self._jitted.lower(state_like, probe, keys, np.uint32(0)).compile()

  def in_order(self, values: dict, which: int) -> dict:
    order = self.order[which] if self.order is not None else sorted(values)
    return {k: values[k] for k in order}


class _AcrossMembers(_Program):
  """A diagnostic across members (`PopulationDiagnostic`): `compute` on the whole population's
  state, jitted as it is; its key is member 0's diagnostic key, folded as `diagnostic_rng`'s."""

  def __init__(self, name: str, diagnostic: PopulationDiagnostic, weights: str = "live"):
    self.order = None
    name_hash = _name_hash(name)

    def program(states, probe, keys, step):
      rng = jax.random.fold_in(jax.random.fold_in(keys[0], name_hash), step)
      scalars, arrays = diagnostic.compute(with_weights(states, weights), probe, rng)
      self.order = (list(scalars), list(arrays))
      return dict(scalars), dict(arrays)

    program.__name__ = program.__qualname__ = f"diagnostic_{name}"
    self._jitted = jax.jit(program)
    self._compiled = None


class PopulationRows:
  """A population folder's metrics.csv (the rows of its diagnostics across members): each write
  replaces the rows of that step and those names, so a rerun or backfill never doubles them."""

  def __init__(self, folder: str):
    self.path = os.path.join(folder, "metrics.csv")

  def write(self, step: int, scalars: dict[str, float]) -> None:
    rows = RowBuffer()
    rows.write(step, scalars)
    rewrite_metrics(self.path, step, lambda name: name in scalars, rows.rows)


def population_target(folder: str) -> Target:
  """Where a population's diagnostics across members go: its folder (`populations/<id>`),
  `diagnostics/<name>/` for arrays and figures, metrics.csv for scalars."""
  return Target(-1, folder, PopulationRows(folder))


class PopulationDiagnostics:
  """The configured diagnostics of a population (a single run is a population of one).

  Args:
    diagnostics: the scheduled diagnostics (`exp.diagnostics`).
    probe: the probe batch (`probe_batch`).
    diag_keys: the members' diagnostic keys, with a leading member axis (members, ...).
    draw: whether to draw figures (a population may skip them: the npz arrays are enough to
      draw them later, see `gmf_jax.diagnostics.draw_figures`).
  """

  def __init__(self, diagnostics: list[ScheduledDiagnostic], probe, diag_keys, *, draw: bool):
    self.diagnostics = list(diagnostics)
    self.probe, self.diag_keys, self.draw = probe, diag_keys, draw
    self.size = int(diag_keys.shape[0])
    self.steps: frozenset[int] = frozenset().union(*(d.schedule.steps for d in self.diagnostics))
    self._programs = {d.name: _Program(d.name, d.diagnostic, self.size, d.weights)
                      for d in self.diagnostics if isinstance(d.diagnostic, Diagnostic)}
    # Across members: nothing to compare in a population of one (a member trained on alone).
    self._across = {d.name: _AcrossMembers(d.name, d.diagnostic, d.weights)
                    for d in self.diagnostics
                    if isinstance(d.diagnostic, PopulationDiagnostic) and self.size > 1}
    self.diagnostics = [d for d in self.diagnostics
                        if not isinstance(d.diagnostic, PopulationDiagnostic)
                        or d.name in self._across]
    self._unstack = None
    for d in self.diagnostics:
      if d.name not in self._programs and d.name not in self._across:
        log.info("diagnostic %r is a plain callable returning a DiagnosticResult (the old form): "
                 "it is not vmapped and runs once per member (%d here); return "
                 "gmf_jax.diagnostics.Diagnostic(compute) to compute every member in one call.",
                 d.name, self.size)

  def due(self, step: int) -> list[ScheduledDiagnostic]:
    return [d for d in self.diagnostics if d.schedule.due(step)]

  def warm_up(self, state_like, steps: range | None = None) -> threading.Thread:
    """Compiles every diagnostic in a background thread; join it before the first `run`.

    Started once the first training chunk is traced (the loop's `prepare`), it traces and
    compiles the diagnostics beside that chunk's compilation and training, on cycles they leave
    idle, so a diagnostic's first scheduled run costs no compilation. (Started any earlier, its
    Python tracing would hold up the training chunk's.) `state_like`: the population's state
    or its shapes (arrays, host arrays or `jax.ShapeDtypeStruct`s; see `host_like`), read
    here, before this returns, and never copied. `steps`: only the diagnostics due at one of
    them (a population that will have shrunk by then needs other programs). Old-form
    diagnostics are called once on a zero state, their results discarded.
    """
    like = _abstract(state_like)
    due = [d for d in self.diagnostics
           if steps is None or (d.schedule.next_after(steps.start - 1) or steps.stop) < steps.stop]

    def work():
      for d in due:
        try:
          program = self._programs.get(d.name) or self._across.get(d.name)
          if program is not None:
            program.compile(like, self.probe, self.diag_keys)
          else:
            d.diagnostic(_zero_member(like), self.probe,
                         diagnostic_rng(self.diag_keys[0], d.name, 0))
        except Exception:  # noqa: BLE001 - the scheduled run will raise it where it is seen
          log.debug("warm-up of diagnostic %s failed", d.name, exc_info=True)

    thread = threading.Thread(target=work, name="gmf_jax-diagnostics-warm-up", daemon=True)
    thread.start()
    return thread

  def run(self, step: int, state, targets: list[Target], *, force: bool = False,
          seconds: dict[str, float] | None = None, defer=None,
          population: Target | None = None) -> dict[str, float]:
    """Runs the diagnostics due at `step` (all of them with `force`) for every member of
    `state` (a population: a leading member axis, the step shared) and writes the results of
    the members in `targets`; those across members go to `population` (`population_target`;
    None: they are not run).

    `defer(work)`: where given, the files of the vmapped diagnostics are written by `work()`,
    which the caller runs later (the training loop: once the next chunk is queued); their
    results are on the host by then, and `state` is not read again.

    Returns:
      `seconds` (a new dict by default), with each diagnostic's seconds, its writes included
      (deferred writes add theirs when they run).
    """
    due = self.diagnostics if force else self.due(step)
    seconds = {} if seconds is None else seconds
    timed = functools.partial(_timed, seconds)
    across = {} if population is None else self._across
    due = [d for d in due if not isinstance(d.diagnostic, PopulationDiagnostic)
           or d.name in across]
    programs = {**self._programs, **across}
    queued = {d.name: timed(d.name, programs[d.name], state, self.probe, self.diag_keys, step)
              for d in due if d.name in programs}  # dispatched first: the device works
    members = None
    for d in due:
      if d.name in across:
        scalars, arrays = timed(d.name, self._fetch, d.name, queued.pop(d.name))
        write = functools.partial(timed, d.name, self._write_across, d, step, population,
                                  scalars, arrays)
        write() if defer is None else defer(write)
      elif d.name in queued:
        scalars, arrays = timed(d.name, self._fetch, d.name, queued.pop(d.name))
        write = functools.partial(timed, d.name, self._write_all, d, step, targets, scalars,
                                  arrays)
        if defer is None:
          write()
        else:
          defer(write)
      else:
        members = self._members(state) if members is None else members
        timed(d.name, self._run_old_form, d, step, members, targets)
    return seconds

  def _fetch(self, name: str, queued) -> tuple[dict, dict]:
    """A diagnostic's results on the host (one transfer), in compute's own order."""
    program = self._programs.get(name) or self._across[name]
    scalars, arrays = jax.device_get(queued)
    return program.in_order(scalars, 0), program.in_order(arrays, 1)

  def _write_all(self, d: ScheduledDiagnostic, step: int, targets: list[Target], scalars,
                 arrays) -> None:
    for t in targets:
      self._write(d, step, t, {k: v[t.index] for k, v in scalars.items()},
                  {**d.diagnostic.static, **{k: v[t.index] for k, v in arrays.items()}})

  def _write_across(self, d: ScheduledDiagnostic, step: int, target: Target, scalars,
                    arrays) -> None:
    """A diagnostic across members: one result, the population's, figures drawn."""
    arrays = {**d.diagnostic.static, **arrays}
    scalars = {k: float(v) for k, v in scalars.items()}
    figures = {} if d.diagnostic.draw is None else d.diagnostic.draw(
        {k: np.asarray(v) for k, v in arrays.items()}, scalars)
    remove_outputs(target.workdir, d.name, step)
    write_result(d.name, step, DiagnosticResult(scalars, arrays, figures), target.workdir,
                 target.writer, target.image_writer)

  def _run_old_form(self, d: ScheduledDiagnostic, step: int, members: list,
                    targets: list[Target]) -> None:
    """A plain callable diagnostic: called on each member's own state."""
    for t in targets:
      result = d.diagnostic(with_weights(members[t.index], d.weights), self.probe,
                            diagnostic_rng(self.diag_keys[t.index], d.name, step))
      if not self.draw:
        result.figures = {}
      write_result(d.name, step, result, t.workdir, t.writer, t.image_writer)

  def _write(self, d: ScheduledDiagnostic, step: int, target: Target, scalars, arrays) -> None:
    figures = {}
    if self.draw and d.diagnostic.draw is not None:
      figures = d.diagnostic.draw(arrays, {k: float(v) for k, v in scalars.items()})
    write_result(d.name, step, DiagnosticResult(scalars, arrays, figures), target.workdir,
                 target.writer, target.image_writer)

  def _members(self, state) -> list:
    """Every member's own state (for old-form diagnostics), sliced in one call."""
    if self.size == 1:
      return [member(state, 0)]
    if self._unstack is None:
      size = self.size
      self._unstack = jax.jit(lambda tree: tuple(
          jax.tree_util.tree_map(lambda a, i=i: a[i], tree) for i in range(size)))
    step = state.step
    return [s.replace(step=step) for s in self._unstack(state.replace(step=None))]


def _timed(seconds: dict[str, float], name: str, fn, *args):
  """`fn(*args)`, its seconds added to `seconds[name]`."""
  start = time.perf_counter()
  try:
    return fn(*args)
  finally:
    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start


def _shape_of(a) -> jax.ShapeDtypeStruct:
  if isinstance(a, jax.ShapeDtypeStruct):
    return a
  if isinstance(a, jax.Array):
    return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding,
                                weak_type=a.aval.weak_type)
  if isinstance(a, (bool, int, float)):  # a Python scalar: what jit makes of it
    return jax.ShapeDtypeStruct((), jnp.result_type(a), weak_type=True)
  a = np.asarray(a)
  return jax.ShapeDtypeStruct(a.shape, jax.dtypes.canonicalize_dtype(a.dtype))


def _abstract(tree):
  return jax.tree_util.tree_map(_shape_of, tree)


def host_like(tree):
  """The shapes of `tree` as its host copy will have them (no layout, no weak types): what to
  warm up on when the diagnostics run on a host copy of the state (several processes)."""
  return jax.tree_util.tree_map(
      lambda a: jax.ShapeDtypeStruct(a.shape, jax.dtypes.canonicalize_dtype(a.dtype)), tree)


def _zero_member(like):
  """Member 0 of a population's shapes, as zeros (an old-form diagnostic's warm-up call)."""
  step = like.step
  zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape[1:], s.dtype),
                                 like.replace(step=None))
  return zeros.replace(step=jnp.zeros(step.shape, step.dtype))


def remove_outputs(workdir: str, name: str, step: int) -> None:
  """Deletes what diagnostic `name` wrote at `step` (its arrays and figures), before a rerun
  there writes them anew: a figure the new run does not draw must not linger as if it had."""
  folder = os.path.join(workdir, DIAG_DIR, name)
  for path in [os.path.join(folder, f"step_{step}.npz"),
               *glob.glob(os.path.join(glob.escape(folder), f"step_{step}_*.png"))]:
    if os.path.exists(path):
      os.remove(path)


def write_result(name: str, step: int, result: DiagnosticResult, workdir: str, writer,
                 image_writer=None) -> None:
  """Scalars -> `diag/<name>/<key>` rows; arrays -> npz; figures -> PNG (and wandb images)."""
  folder = os.path.join(workdir, DIAG_DIR, name)
  if not os.path.isdir(folder):  # a stat: cheaper than makedirs, called per member and step
    os.makedirs(folder, exist_ok=True)
  if result.scalars:
    writer.write(step, {f"diag/{name}/{k}": float(v) for k, v in result.scalars.items()})
  if result.arrays:
    path = os.path.join(folder, f"step_{step}.npz")
    arrays = {k: np.asarray(v) for k, v in result.arrays.items()}
    # Small results are stored as they are: compressing costs more than it saves there.
    save = np.savez_compressed if sum(a.nbytes for a in arrays.values()) > (1 << 20) else np.savez
    with open(f"{path}.tmp", "wb") as f:  # a file object: a name would get `.npz` appended
      save(f, **arrays)
    os.replace(f"{path}.tmp", path)  # readers never see a half-written file
  images = {}
  for fig_name, fig in result.figures.items():
    fig = fig() if callable(fig) else fig  # drawn only when written
    images[f"diag/{name}/{fig_name}"] = save_png(
        fig, os.path.join(folder, f"step_{step}_{fig_name}.png"))
  if images and image_writer is not None:
    image_writer.write_images(step, images)
