"""Early termination: the rules against hand computations, a hyperband sweep that shrinks its
population (stopped members' folders complete, survivors as they would be had nobody
stopped), a sweep killed at a decision and run again, and the bad inputs.

Tolerance: a survivor trains in populations of 9, then 3, then 1 member, the full sweep's in
one of 9; XLA's CPU kernels round a vmapped batch of 9 and of 3 differently, so its rows match
the full sweep's to about 1e-6 relative here (1e-4 allowed, as a member against its standalone
run elsewhere); the members stopped at the first rung never left the first population and match
bitwise.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal

import pytest

from gmf_jax import ConfigError, failpoints, train_and_evaluate
from gmf_jax.sweep import make_sweep, run_sweep
from gmf_jax.sweep.early_stop import Metric, Rule
from gmf_jax.sweep.run import member_config
from tests.conftest import CONFIGS, run_cli

MLP = str(CONFIGS / "mlp.py")
STEPS = dict(num_steps=90, steps_per_call=10, log_every_steps=10, eval_every_steps=10,
             progress_bar=False)
STEPS["checkpoint.every_steps"] = 0
RTOL = 1e-4
MIN = Metric("eval/loss", "minimize")


def _sweep(**extra):
  return {"config": f"{MLP}:smoke", "method": "random", "count": 9, "seed": 3,
          "parameters": {"lr": {"distribution": "log_uniform_values", "min": 0.003,
                                "max": 1.0}},
          "metric": {"name": "eval/loss", "goal": "minimize"}, **extra}


HYPERBAND = {"type": "hyperband", "min_iter": 10, "eta": 3}  # rungs at steps 10 and 30


def _json(path):
  with open(path) as f:
    return json.load(f)


def _rows(folder):
  with open(os.path.join(folder, "metrics.csv")) as f:
    return sorted((int(r["step"]), r["name"], r["value"]) for r in csv.DictReader(f)
                  if r["name"].startswith(("train/", "eval/")))


# The rules.


def test_hyperband_keeps_the_top_nth_of_everyone_at_the_rung():
  rule = Rule("hyperband", 10, 3, MIN)
  order = {m: i for i, m in enumerate("abcdefghi")}
  # Earlier populations put 3 values on record at this rung; this population has 6 members,
  # one of them NaN and two tied.
  history = {10: {"g": 0.5, "h": 0.1, "i": 2.0}}
  values = {"a": 0.3, "b": float("nan"), "c": 0.3, "d": 0.05, "e": 0.9, "f": None}
  got = rule.decide(10, values, order, history)
  # 9 on record: 3 go on. Ranked: d 0.05, h 0.1, a 0.3 (before c: sweep order), c, g, e, i,
  # then the non-finite b and the failed f (ties among those by sweep order).
  assert {m for m, o in got.items() if o["continue"]} == {"d", "a"}
  assert [got[m]["rank"] for m in "abcdef"] == [3, 8, 4, 1, 6, 9]
  assert all(o["of"] == 9 and o["kept"] == 3 for o in got.values())


def test_hyperband_keeps_one_when_fewer_than_eta_and_never_a_nan():
  rule = Rule("hyperband", 10, 3, MIN)
  assert rule.decide(10, {"a": 2.0, "b": 1.0}, {"a": 0, "b": 1}, {}) == {
      "a": {"continue": False, "rank": 2, "of": 2, "kept": 1},
      "b": {"continue": True, "rank": 1, "of": 2, "kept": 1}}
  got = rule.decide(10, {"a": float("nan")}, {"a": 0}, {})
  assert got["a"]["continue"] is False
  got = rule.decide(10, {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}, dict(a=0, b=1, c=2, d=3), {})
  assert [m for m, o in got.items() if o["continue"]] == ["d"]  # 4 // 3 = 1 goes on
  up = Rule("hyperband", 10, 2, Metric("eval/accuracy", "maximize"))
  got = up.decide(10, {"a": 0.9, "b": 0.5, "c": 0.7, "d": 0.95}, dict(a=0, b=1, c=2, d=3), {})
  assert {m for m, o in got.items() if o["continue"]} == {"a", "d"}


def test_hyperband_rungs_are_min_iter_times_powers_of_eta_below_num_steps():
  assert Rule("hyperband", 500, 3, MIN).steps(13500, 500) == [500, 1500, 4500]
  assert Rule("hyperband", 2000, 3, MIN).steps(40000, 2000) == [2000, 6000, 18000]
  assert Rule("median", 30, metric=MIN).steps(90, 10) == [30, 40, 50, 60, 70, 80]


def test_median_stops_a_best_so_far_worse_than_the_others_median_at_the_step():
  rule = Rule("median", 20, metric=MIN)
  history = {10: {"a": 0.2, "b": 0.9, "c": 0.5, "x": 0.4},
             20: {"x": 0.45, "y": 0.6}}  # x and y: an earlier population's
  values = {"a": 0.7, "b": 0.8, "c": 0.5}
  got = rule.decide(20, values, {}, history)
  # At step 20 the others' values: for a, [0.8, 0.5, 0.45, 0.6] -> median 0.55; a's best so far
  # is 0.2 (step 10): goes on. b: best 0.8 vs median of [0.7, 0.5, 0.45, 0.6] = 0.55: stops.
  # c: best 0.5 vs median of [0.7, 0.8, 0.45, 0.6] = 0.65: goes on.
  assert {m: o["continue"] for m, o in got.items()} == {"a": True, "b": False, "c": True}
  assert got["a"]["median"] == pytest.approx(0.55) and got["a"]["best"] == 0.2
  assert got["b"]["best"] == 0.8
  # Alone, with nothing to compare: goes on; a NaN best against finite others: stops.
  assert rule.decide(20, {"a": 9.0}, {}, {})["a"]["continue"] is True
  assert rule.decide(20, {"a": math.nan, "b": 1.0}, {}, {})["a"]["continue"] is False


# A hyperband sweep, shrinking.


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """The same 9 points trained fully and with hyperband (rungs 10 and 30 of 90 steps)."""
  root = tmp_path_factory.mktemp("early")
  full = run_sweep(make_sweep(_sweep(name="full"), STEPS), str(root / "full"))
  halving = run_sweep(make_sweep(_sweep(name="hb", early_terminate=HYPERBAND), STEPS),
                      str(root / "hb"))
  return root, full, halving


def test_stopped_members_end_at_their_rung_with_complete_folders(swept):
  root, full, halving = swept
  assert full.counts() == {"completed": 9}
  assert halving.counts() == {"completed": 1, "stopped": 8} and halving.all_completed
  sweep = _json(root / "hb" / "sweep.json")
  decisions = sweep["early_terminate"]["decisions"]
  stopped_at = {n: d["step"] for d in decisions for n in d["stopped"]}
  assert sorted(stopped_at.values()) == [10] * 6 + [30] * 2
  member_steps = 0
  for m in sweep["members"]:
    folder = root / "hb" / m["name"]
    meta, summary = _json(folder / "metadata.json"), _json(folder / "summary.json")
    last = max(step for step, _, _ in _rows(folder))
    member_steps += last
    assert m["status"] == meta["status"] == summary["status"]
    if m["name"] not in stopped_at:
      assert meta["status"] == "completed" and last == 90
      continue
    rung = stopped_at[m["name"]]
    entry = summary["early_terminate"]
    assert meta["status"] == "stopped" and last == rung, m["name"]
    assert f"step {rung}" in meta["error"]
    assert entry["rule"] == "hyperband" and entry["step"] == rung
    assert entry["value"] == pytest.approx(summary["metrics"]["eval/loss"]["final"])
    assert entry["of"] == (9 if rung == 10 else 3) and entry["rank"] > entry["kept"]
    # Its last state is kept: the population checkpoint of its rung restores it.
    from gmf_jax.runlog.population import population_steps
    assert max(population_steps(str(folder))) == rung
  assert member_steps == 6 * 10 + 2 * 30 + 90  # 6 stopped at 10, 2 at 30, 1 to the end


def test_the_recorded_decisions_are_the_rule_applied_to_the_recorded_values(swept):
  root, _, _ = swept
  sweep = _json(root / "hb" / "sweep.json")
  values = {int(s): v for s, v in sweep["early_terminate"]["values"].items()}
  order = {m["name"]: i for i, m in enumerate(sweep["members"])}
  rule = Rule("hyperband", 10, 3, MIN)
  for d in sweep["early_terminate"]["decisions"]:
    mine = {n: values[d["step"]][n] for n in d["continued"] + d["stopped"]}
    by_hand = sorted(mine, key=lambda n: (mine[n], order[n]))
    keep = max(1, len(mine) // 3)
    assert set(d["continued"]) == set(by_hand[:keep]), d["step"]
    assert rule.decide(d["step"], mine, order, {}) == d["details"]
  # The lone finisher is the best at every rung it passed.
  finisher = [m["name"] for m in sweep["members"] if m["status"] == "completed"]
  assert finisher == sweep["early_terminate"]["decisions"][-1]["continued"]


def test_survivors_match_the_full_sweep_and_the_first_rung_bitwise(swept):
  root, _, _ = swept
  sweep = _json(root / "hb" / "sweep.json")
  first = set(sweep["early_terminate"]["decisions"][0]["stopped"])
  for m in sweep["members"]:
    got, want = _rows(root / "hb" / m["name"]), _rows(root / "full" / m["name"])
    want = [r for r in want if r[0] <= max(s for s, _, _ in got)]
    if m["name"] in first:
      assert got == want, m["name"]  # never left the population of 9
      continue
    assert [r[:2] for r in got] == [r[:2] for r in want]
    for (_, _, a), (step, name, b) in zip(got, want, strict=True):
      assert float(a) == pytest.approx(float(b), rel=RTOL, abs=1e-7), (m["name"], step, name)


def test_a_stopped_member_trains_on_alone_from_its_rung(swept, tmp_path):
  root, _, _ = swept
  shutil.copytree(root / "hb", tmp_path / "hb")  # the other tests read the sweep as it ended
  sweep = _json(tmp_path / "hb" / "sweep.json")
  name = sweep["early_terminate"]["decisions"][-1]["stopped"][0]  # stopped at step 30
  definition = make_sweep(_sweep(name="hb", early_terminate=HYPERBAND), STEPS)
  member = next(m for m in definition.members if m.name == name)
  config = member_config(definition, member)
  config.num_steps = 40
  result = train_and_evaluate(config, str(tmp_path / "hb" / name))
  assert _json(tmp_path / "hb" / name / "metadata.json")["status"] == "completed"
  rows = _rows(tmp_path / "hb" / name)
  assert [r for r in rows if r[0] <= 30] == _rows(root / "hb" / name)  # kept, then 31..40
  assert max(r[0] for r in rows) == 40 and result.metrics["eval/loss"] > 0


def test_a_median_sweep_stops_the_members_below_the_median(tmp_path):
  rule = {"type": "median", "min_iter": 20}
  result = run_sweep(make_sweep(_sweep(name="med", count=4, early_terminate=rule),
                                {**STEPS, "num_steps": 40}), str(tmp_path / "med"))
  sweep = _json(tmp_path / "med" / "sweep.json")
  decisions = sweep["early_terminate"]["decisions"]
  assert [d["step"] for d in decisions][:1] == [20]
  stopped = {n for d in decisions for n in d["stopped"]}
  assert stopped and result.counts()["stopped"] == len(stopped)
  values = {int(s): v for s, v in sweep["early_terminate"]["values"].items()}
  for n in decisions[0]["stopped"]:  # worse than the median of the others at step 20
    best = min(values[s][n] for s in (10, 20))
    others = sorted(v for k, v in values[20].items() if k != n)
    median = (others[len(others) // 2] if len(others) % 2
              else (others[len(others) // 2 - 1] + others[len(others) // 2]) / 2)
    assert best > median


# Killed at a decision, run again.


def test_a_sweep_killed_as_it_shrinks_finishes_as_if_never_stopped(swept, tmp_path):
  root, _, halving = swept
  file = tmp_path / "hb.py"
  file.write_text(f"def get_sweep():\n  return {_sweep(name='hb', early_terminate=HYPERBAND)!r}\n")
  flags = [f"--sweep={file}", f"--workdir={tmp_path / 'hb'}"] + [
      f"--config.{k}={v}" for k, v in STEPS.items()]
  # Killed once the first rung's checkpoint is saved and the decision recorded, before any
  # member's record changed: the rerun applies the decision as recorded.
  killed = run_cli(*flags, cwd=tmp_path, module="gmf_jax.sweep",
                   env={failpoints.ENV: "shrink@1=SIGKILL"})
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  assert _json(tmp_path / "hb" / "sweep.json")["early_terminate"]["decisions"]
  again = run_cli(*flags, cwd=tmp_path, module="gmf_jax.sweep")
  assert again.returncode == 0, again.stderr[-2000:]
  assert "applied as recorded" in again.stdout + again.stderr
  want = _json(root / "hb" / "sweep.json")
  got = _json(tmp_path / "hb" / "sweep.json")
  assert {m["name"]: m["status"] for m in got["members"]} == halving.statuses
  assert got["early_terminate"]["decisions"] == want["early_terminate"]["decisions"]
  for m in want["members"]:
    assert _rows(tmp_path / "hb" / m["name"]) == _rows(root / "hb" / m["name"]), m["name"]


def test_the_shipped_hyperband_sweep_passes_its_checks(monkeypatch):
  from gmf_jax.sweep.run import check_populations, plan_sweep
  from gmf_jax.sweep.spec import load_sweep
  from tests.conftest import ROOT

  monkeypatch.chdir(ROOT)
  sweep = load_sweep("sweeps/mlp_hyperband.py")
  assert sweep.early_terminate.steps(5000, 1000) == [1000, 3000]
  plan = plan_sweep(sweep, str(ROOT / "runs" / "not-written"))
  check_populations(plan, plan.populations)  # min_iter, eval steps and metric against the config
  assert not (ROOT / "runs" / "not-written").exists()


# Bad input.


@pytest.mark.parametrize("extra, overrides, says", [
    ({"early_terminate": {"type": "asha", "min_iter": 10}}, {}, "early_terminate.type='asha'"),
    ({"early_terminate": {**HYPERBAND, "eta": 1}}, {}, "early_terminate.eta=1"),
    ({"early_terminate": {**HYPERBAND, "min_iter": 0}}, {}, "early_terminate.min_iter=0"),
    ({"early_terminate": {**HYPERBAND, "min_iter": 90}}, {}, "must be below num_steps=90"),
    ({"early_terminate": {**HYPERBAND, "min_iter": 15}}, {}, "not an evaluation step"),
    ({"early_terminate": {**HYPERBAND, "brackets": 2}}, {}, "unknown field 'brackets'"),
    ({"metric": None, "early_terminate": HYPERBAND}, {}, "needs the sweep's 'metric'"),
    ({"metric": {"name": "eval/los", "goal": "minimize"}}, {}, "metric.name='eval/los'"),
    ({"metric": {"name": "loss", "goal": "minimize"}}, {}, "metric.name='loss'"),
    ({"metric": {"name": "eval/loss", "goal": "lower"}}, {}, "metric.goal='lower'"),
    ({"metric": {"name": "eval/loss"}}, {}, "metric.goal=None"),
])
def test_bad_early_termination_is_refused_before_anything_is_written(tmp_path, extra,
                                                                      overrides, says):
  definition = {**_sweep(name="bad", count=2, early_terminate=HYPERBAND), **extra}
  if definition["metric"] is None:
    del definition["metric"]
  with pytest.raises(ConfigError, match=None) as info:
    run_sweep(make_sweep(definition, {**STEPS, **overrides}), str(tmp_path / "bad"))
  assert says in str(info.value) and "\n" not in str(info.value)
  assert not (tmp_path / "bad").exists()


def test_programs_compiled_ahead_are_the_ones_the_shrunk_population_runs():
  """Compiling ahead (`gmf_jax.train.warm`, where an accelerator trains) fills JAX's cache only
  if what it lowers is exactly what the smaller population's calls lower: the gather, the
  chunk, evaluation and the best-state pick."""
  import jax
  import numpy as np

  from gmf_jax import load_config
  from gmf_jax.members import _take, take_members
  from gmf_jax.train import warm
  from gmf_jax.train.build import build_experiment, init_population
  from gmf_jax.train.chunks import device_chunk_fn, make_feed
  from gmf_jax.train.evaluation import _pick, eval_weights, make_eval_fn
  from gmf_jax.train.loop import _stack
  from gmf_jax.train.pipeline import padded_eval_data
  from gmf_jax.train.step import make_keys

  exp = build_experiment(load_config(f"{MLP}:smoke"), population=3)
  keys = _stack([make_keys(s) for s in range(3)])
  state, keys = exp.layout.put_population(
      init_population(exp, keys, _stack([exp.hparams] * 3)), keys)
  like, data = warm.shapes(state), make_feed(exp, keys, state, 3).data
  ahead, _, _ = warm.lowered(exp, like, warm.shapes(keys), warm.shapes(data), 2)
  keep = [0, 2]
  small = take_members(state, keep)
  small_keys = jax.tree_util.tree_map(lambda a: np.take(np.asarray(a), keep, axis=0), keys)
  eval_size = min(exp.config.eval_batch_size, len(exp.dataset.test))
  eval_data = exp.layout.put(padded_eval_data(exp.dataset.test, eval_size))
  members = small.replace(step=None)
  real = {
      "gather": _take.lower(state.replace(step=None), np.asarray(keep, np.int32)),
      "chunk": device_chunk_fn(exp, small, 2).lower(small, small_keys, data, np.int32(5)),
      "evaluation": make_eval_fn(exp, 2, eval_size).lower(
          eval_weights(small), small.hparams, small_keys, *eval_data),
      "pick": _pick.lower(members, members, np.ones(2, bool)),
  }
  for name, program in real.items():
    assert ahead[name].as_text() == program.as_text(), name


def test_an_explicit_members_axis_is_refused_with_early_termination():
  """A shrunk population's size need not divide `mesh.members` (checked where a sweep builds its
  populations; on several devices `mesh.members=2` itself is valid)."""
  import copy
  import dataclasses

  from gmf_jax import load_config
  from gmf_jax.sweep.early_stop import check_against
  from gmf_jax.train.build import build_experiment

  exp = build_experiment(load_config(f"{MLP}:smoke", STEPS))
  config = copy.deepcopy(exp.config)
  with config.unlocked():
    config.mesh.members = 2
  rule = Rule("hyperband", 10, 3, MIN)
  with pytest.raises(ConfigError, match="mesh.members=2 need not divide"):
    check_against(rule, MIN, dataclasses.replace(exp, config=config), "hb")
  check_against(rule, MIN, exp, "hb")  # mesh.members=0: each size picks its devices
