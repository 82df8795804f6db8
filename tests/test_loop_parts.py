"""The loop's parts, each on its own: schedules and the chunk plan, the chunk pipeline with a fake
feed, the built-in actions' schedules, the non-finite policy, the metric window, the
multi-process relay; and a periodic action added without touching the loop."""

from __future__ import annotations

import os
import types

import numpy as np
import pytest

from gmf_jax import load_config
from gmf_jax.errors import NonFiniteError
from gmf_jax.train.actions import (
  PeriodicAction,
  Schedule,
  Tick,
  needs_state,
  next_stop,
  run_due,
)
from gmf_jax.train.chunks import ChunkPipeline, Feed
from gmf_jax.train.evaluation import eval_schedule, make_best_checkpoint
from gmf_jax.train.metering import MetricWindow
from gmf_jax.train.recorder import NonFiniteCheck
from gmf_jax.train.relay import PrimaryRelay
from gmf_jax.train.saving import make_checkpoint
from tests.conftest import CONFIGS


def _action(name, schedule, log=None, **kw):
  log = [] if log is None else log
  return PeriodicAction(name, schedule, lambda tick: log.append((name, tick.step)), **kw)


def _steps(schedule, num_steps):
  return [s for s in range(1, num_steps + 1) if schedule.due(s)]


# Schedules and the chunk plan


def test_schedules_every_given_steps_end_and_log_spaced():
  assert _steps(Schedule.make(25, every=10), 25) == [10, 20, 25]
  assert _steps(Schedule.make(25, every=10, end=False), 25) == [10, 20]
  assert _steps(Schedule.make(25, steps=[3, 7, 99]), 25) == [3, 7, 25]
  assert _steps(Schedule.make(25, steps=[3], end=False), 25) == [3]
  log = Schedule.log_spaced(1000, 4)
  assert _steps(log, 1000) == [1, 10, 100, 1000]
  every = Schedule.make(25, every=10, steps=[3])
  assert [every.next_due(s) for s in (0, 3, 9, 10, 20, 25)] == [3, 10, 10, 20, 25, 30]
  assert Schedule.make(25, steps=[3], end=False).next_due(3) is None


def test_chunks_end_at_the_union_of_the_schedules():
  actions = [_action("eval", Schedule.make(100, every=30)),
             _action("diag", Schedule.make(100, steps=[7, 45], end=False))]
  ends, step = [], 0
  while step < 100:
    step = next_stop(actions, step, longest=20, num_steps=100)
    ends.append(step)
  assert ends == [7, 27, 30, 45, 60, 80, 90, 100]
  assert needs_state(actions, 45) and needs_state(actions, 90) and not needs_state(actions, 80)


def test_due_actions_run_in_order_once_and_the_checkpoint_on_a_signal():
  log = []
  actions = [_action("a", Schedule.make(10, every=5), log),
             _action("b", Schedule.make(10, steps=[5], end=False), log),
             _action("ckpt", Schedule.make(10), log, on_signal=True)]
  tick = Tick(5, state=None)
  run_due(actions, tick)
  assert log == [("a", 5), ("b", 5)]
  tick.signalled = True
  run_due(actions, tick)  # a and b ran already: only the checkpoint
  assert log == [("a", 5), ("b", 5), ("ckpt", 5)]


# The chunk pipeline with a fake feed


class FakeFeed:
  """Adds 1 to the state per step and returns per-step metrics padded to `slots`."""

  def __init__(self, slots):
    self.slots, self.calls, self.prefetched = slots, [], []

  def run(self, state, start, n):
    self.calls.append((start, n))
    metrics = {"loss": np.zeros((1, self.slots))}
    metrics["loss"][0, :n] = np.arange(start + 1, start + n + 1)
    return state + n, metrics

  def feed(self):
    return Feed(self.run, lambda start, n: self.prefetched.append((start, n)))


def test_the_pipeline_dispatches_to_the_actions_steps_prefetches_and_collects_once():
  fake = FakeFeed(slots=10)
  pipeline = ChunkPipeline(fake.feed(), [_action("eval", Schedule.make(25, every=12))],
                           longest=10, num_steps=25, size=1)
  chunk, state, seen = pipeline.dispatch(0, 0), None, []
  while True:
    metrics = pipeline.collect(chunk)
    seen.append(metrics["loss"][0].tolist())
    state = chunk.state
    if chunk.end >= 25:
      break
    chunk = pipeline.dispatch(chunk.state, chunk.end)
  assert fake.calls == [(0, 10), (10, 2), (12, 10), (22, 2), (24, 1)]
  assert fake.prefetched == [(10, 2), (12, 10), (22, 2), (24, 1)]  # not past the last step
  assert seen[1] == [11.0, 12.0] and sum(len(s) for s in seen) == 25  # sliced to each chunk
  assert state == 25


# The built-in actions' schedules


def _context(**config):
  checkpoint = types.SimpleNamespace(every_steps=config.pop("ckpt", 0))
  cfg = types.SimpleNamespace(eval_every_steps=config.pop("eval", 30), checkpoint=checkpoint)
  saved = []
  context = types.SimpleNamespace(
      exp=types.SimpleNamespace(config=cfg, num_steps=100), size=3, start_step=0,
      save=lambda step, state, best=False, tick=None: saved.append((step, best, state)))
  return context, saved


def test_builtin_actions_own_their_schedules():
  context, saved = _context(eval=30, ckpt=40)
  assert _steps(eval_schedule(context.exp), 100) == [30, 60, 90, 100]
  checkpoint = make_checkpoint(context)
  assert _steps(checkpoint.schedule, 100) == [40, 80, 100]
  assert checkpoint.on_signal and checkpoint.due(Tick(13, None, signalled=True))
  checkpoint.run(Tick(40, "state"))
  assert saved == [(40, False, "state")]
  context, _ = _context(eval=30, ckpt=0)  # 0: only at the end
  assert _steps(make_checkpoint(context).schedule, 100) == [100]


def test_the_best_checkpoint_keeps_each_members_best_state_on_the_device():
  import jax.numpy as jnp
  from flax import struct

  @struct.dataclass
  class State:
    step: int
    params: jnp.ndarray

  context, _ = _context()
  kept = []
  context.store = types.SimpleNamespace(
      keep_best=lambda step, state, meta: kept.append((step, state, meta)))
  context.record = types.SimpleNamespace(windows=lambda: {"windows": "of now"})
  context.state = State(0, jnp.zeros(3))
  action = make_best_checkpoint(context)
  assert _steps(action.schedule, 100) == [30, 60, 90, 100]
  action.prepare()  # the pick compiled ahead, in a thread, for the population's shapes
  action.run(Tick(30, State(30, jnp.array([1.0, 2.0, 3.0])), improved=np.ones(3, bool)))
  action.run(Tick(60, State(60, jnp.array([9.0, 9.0, 9.0])), improved=np.array([0, 1, 0], bool)))
  action.run(Tick(90, State(90, jnp.array([7.0, 7.0, 7.0])), improved=np.zeros(3, bool)))
  assert [s for s, _, _ in kept] == [30, 60]  # nothing improved at 90
  best = kept[-1][1]
  assert best.step == 60 and best.params.tolist() == [1.0, 9.0, 3.0]
  assert kept[-1][2] == {"windows": "of now"}


def test_the_best_state_is_written_with_the_next_checkpoint_or_at_close(tmp_path):
  import jax.numpy as jnp

  from gmf_jax.runlog.population import PopulationCheckpoints

  pop = tmp_path / "population"  # its stacked state: every leaf with a member axis
  store = PopulationCheckpoints(str(pop), [None], ["m"], max_to_keep=2, async_save=False)
  store.keep_best(30, {"w": jnp.full((1, 3), 30.0)}, {})
  assert not store.has(30, best=True)  # held on the device, not written at every improvement
  store.save(50, {"w": jnp.full((1, 3), 50.0)}, {})
  assert store.has(30, best=True)  # beside the checkpoint a resume starts from
  store.keep_best(60, {"w": jnp.full((1, 3), 60.0)}, {})
  store.close()  # a run that ends without another checkpoint (it failed) still writes it
  assert os.listdir(pop / "best_checkpoint") == ["60"]
  reopened = PopulationCheckpoints(str(pop), [None], ["m"], max_to_keep=2)
  state, _ = reopened.checkpointer.restore(60, {"w": jnp.zeros((1, 3))}, best=True)
  assert state["w"].tolist() == [[60.0] * 3]
  reopened.close()


# The non-finite policy and the metric window


def test_the_nonfinite_policy_stops_or_skips():
  chunk = {"loss": np.array([1.0, np.nan, 2.0, np.inf]), "grad_norm": np.ones(4)}
  error = NonFiniteCheck("stop", 10, saved_step=lambda: 40).check(dict(chunk), start=50)
  assert isinstance(error, NonFiniteError) and error.step == 52
  assert "non-finite loss at step 52" in str(error) and "of step 40" in str(error)
  skip = NonFiniteCheck("skip", max_consecutive=1)
  metrics = dict(chunk)
  assert skip.check(metrics, start=50) is None
  assert metrics["skipped"].tolist() == [0, 1, 0, 1] and skip.skipped == 2
  assert skip.schedule_steps([51, 53, 54], start=50) == [51, 52, 53]  # skips lag the schedule
  both = {"loss": np.array([np.nan, np.nan]), "grad_norm": np.ones(2)}
  error = NonFiniteCheck("skip", max_consecutive=1).check(both, start=0)
  assert error.step == 2 and "2 steps in a row" in str(error)


def test_the_metric_window_gives_the_same_means_however_steps_are_chunked():
  values = np.random.default_rng(0).normal(size=30).astype(np.float32)
  log_steps = [10, 20, 30]

  def means(cuts):
    window, out, start = MetricWindow(), [], 0
    for end in cuts:
      closing = [s for s in log_steps if start < s <= end]
      out += [m["loss"] for m in window.add({"loss": values[start:end]}, start, closing)]
      restored = MetricWindow()  # a checkpoint's copy of the open window, as a resume reads it
      restored.load_state_dict(window.state_dict())
      window, start = restored, end
    return out

  whole = means([30])
  assert means([7, 13, 25, 30]) == whole == means(list(range(1, 31)))
  assert whole[0] == pytest.approx(float(np.mean(values[:10])), rel=1e-6)


# The multi-process relay


def test_the_relay_holds_process_0s_error_until_every_process_hears_it():
  words = []
  relay = PrimaryRelay(multi_process=True, primary=True,
                       verdict=lambda count, error: words.append((count, error)))
  with relay.work():
    raise OSError("disk full")
  relay_error = relay.held
  with pytest.raises(OSError, match="disk full"):
    relay.hear()
  assert words == [(1, "OSError: disk full")] and relay_error is relay.held
  follower = PrimaryRelay(multi_process=True, primary=False,
                          verdict=lambda count, error: "OSError: disk full")
  with pytest.raises(RuntimeError, match="process 0 stopped the run: OSError: disk full"):
    follower.hear()
  single = PrimaryRelay(multi_process=False, primary=True)
  with pytest.raises(OSError), single.work():
    raise OSError("at once")
  single.hear()  # nothing to relay


# A periodic action added without touching the loop


def test_a_new_periodic_action_is_one_factory_and_one_list_entry(tmp_path, monkeypatch):
  import jax

  from gmf_jax.train.loop import DEFAULT_ACTIONS, train_population
  from gmf_jax.train.recorder import MemberSetup

  seen, events = [], []
  dispatch = ChunkPipeline.dispatch

  def logged_dispatch(self, state, start):
    events.append(("dispatch", start))
    return dispatch(self, state, start)

  monkeypatch.setattr(ChunkPipeline, "dispatch", logged_dispatch)

  def make_norms(context):
    def run(tick):
      norms = jax.vmap(lambda p: sum(jax.numpy.sum(x**2) for x in jax.tree_util.tree_leaves(p)))
      seen.append((tick.step, int(tick.state.step), jax.device_get(norms(tick.state.params))))
      tick.defer(lambda step=tick.step: events.append(("host work", step)))
    return PeriodicAction("norms", Schedule.make(context.exp.num_steps, steps=[7, 13]), run)

  overrides = {"num_steps": 20, "steps_per_call": 10, "log_every_steps": 10,
               "eval_every_steps": 10, "progress_bar": False, "wandb.mode": "disabled"}
  setups = [MemberSetup(load_config(f"{CONFIGS / 'mlp.py'}:smoke", {**overrides, "seed": s}),
                        str(tmp_path / f"m{s}"), name=f"m{s}") for s in (0, 1)]
  result = train_population(setups, population_dir=str(tmp_path / "pop"),
                            actions=[*DEFAULT_ACTIONS, make_norms])
  assert [m.status for m in result.members] == ["completed", "completed"]
  assert [(step, counter) for step, counter, _ in seen] == [(7, 7), (13, 13), (20, 20)]
  assert all(norms.shape == (2,) and norms[0] != norms[1] for _, _, norms in seen)
  # Deferred host work runs once the next chunk is queued (at the last step: no chunk follows).
  for step in (7, 13):
    assert events.index(("dispatch", step)) + 1 == events.index(("host work", step)), events
  assert events[-1] == ("host work", 20)


def test_deferred_host_work_runs_in_order_and_also_when_a_later_action_fails():
  from gmf_jax.train.loop import _run_due

  done = []

  def fail(tick):
    raise RuntimeError("broken")

  actions = [PeriodicAction(name, Schedule(every=1), lambda t, n=name: t.defer(
      lambda: done.append(n))) for name in ("first", "second")]
  tick = Tick(1, None)
  _run_due(actions, tick)
  assert done == [] and len(tick.later) == 2  # nothing ran yet: the loop runs it later
  tick.finish()
  assert done == ["first", "second"] and not tick.later
  tick, done[:] = Tick(2, None), []
  with pytest.raises(RuntimeError, match="broken"):
    _run_due([actions[0], PeriodicAction("fails", Schedule(every=1), fail)], tick)
  assert done == ["first"]  # what the earlier action recorded stays recorded


def test_the_diagnostics_action_ends_chunks_at_the_union_of_the_diagnostics_schedules():
  import jax

  from gmf_jax.train.build import build_experiment, init_population
  from gmf_jax.train.diagnosing import make_diagnostics
  from gmf_jax.train.step import make_keys

  config = load_config(str(CONFIGS / "mlp.py"), {  # confusion_matrix at the end
      "num_steps": 100, "diagnostics.weight_stats.every_steps": 45})
  exp = build_experiment(config)
  keys = jax.tree_util.tree_map(lambda *a: np.stack(a), make_keys(0), make_keys(1))
  values = {k: np.stack([np.asarray(v)] * 2) for k, v in exp.hparams.items()}
  context = types.SimpleNamespace(
      exp=exp, size=2, keys=keys, state=init_population(exp, keys, values), timings={},
      relay=PrimaryRelay(multi_process=False, primary=True),
      store=types.SimpleNamespace(stacked=False))  # a single run's: no population folder
  action = make_diagnostics(context)
  assert _steps(action.schedule, 100) == [45, 90, 100]
  assert action.every_stop and action.prepare is not None
  context.exp = types.SimpleNamespace(diagnostics=())
  assert make_diagnostics(context) is None  # no diagnostics: no action


def test_a_program_compiled_ahead_serves_the_calls_and_other_shapes_fall_back():
  """`warm.Ahead`: the executable compiled in the thread is the one the calls run (jit's own
  cache stays empty: nothing compiled twice); arguments of other shapes go to jit."""
  import jax
  import jax.numpy as jnp

  from gmf_jax.train import warm

  jitted = jax.jit(lambda x, y: x * 2 + y)
  ahead = warm.Ahead(jitted, "double")
  ahead.start(jax.ShapeDtypeStruct((3,), jnp.float32), jax.ShapeDtypeStruct((), jnp.float32))
  out = ahead(jnp.arange(3.0), jnp.float32(1))
  assert out.tolist() == [1.0, 3.0, 5.0]
  assert jitted._cache_size() == 0  # the ahead executable ran
  assert ahead(jnp.arange(4.0), jnp.float32(0)).tolist() == [0.0, 2.0, 4.0, 6.0]
  assert jitted._cache_size() == 1  # other shapes: compiled by jit, once
