"""Seeds until the claim holds: the rule against hand computations, a sweep of two points (one
narrow after its first seeds, one wide until `max`), its record against the member folders, a
sweep killed after a decision and stopped inside a round that ends as if never stopped, the
report's section, and the bad inputs.

The threshold is chosen from a first run's values, so the test is deterministic on any machine:
the two points' half-widths after 3 seeds (lr=0.01: about 0.04, lr=1: about 0.9) differ about
20-fold, and the asked half-width is their geometric mean. Round 0 is the same population as
the first run's, so its values are bitwise the first run's.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal

import pytest

from gmf_jax import ConfigError, Preempted, failpoints
from gmf_jax.sweep import make_sweep, run_sweep
from gmf_jax.sweep.seed_rounds import SeedRounds, half_width, judge
from tests.conftest import CONFIGS, run_cli

MLP = str(CONFIGS / "mlp.py")
STEPS = {"num_steps": 20, "steps_per_call": 10, "log_every_steps": 10, "eval_every_steps": 10,
         "progress_bar": False, "checkpoint.every_steps": 0}
METRIC = {"name": "eval/loss", "goal": "minimize"}
NARROW, WIDE = "lr=0.01", "lr=1"


def _sweep(seeds, **extra):
  return {"config": f"{MLP}:smoke", "name": "rounds",
          "parameters": {"lr": {"values": [0.01, 1.0]}}, "seeds": seeds, "metric": METRIC,
          **extra}


def _rounds(width):
  return {"min": 3, "max": 5, "until": {"ci_half_width": width}}


def _json(path):
  with open(path) as f:
    return json.load(f)


def _final(folder):
  return _json(os.path.join(folder, "summary.json"))["metrics"]["eval/loss"]["final"]


def _rows(folder):
  with open(os.path.join(folder, "metrics.csv")) as f:
    return sorted((int(r["step"]), r["name"], r["value"]) for r in csv.DictReader(f)
                  if r["name"].startswith(("train/", "eval/")))


@pytest.fixture
def disarm():
  yield
  failpoints.arm(None)


# The rule.


def test_the_interval_is_student_t_and_a_point_doubles_its_seeds_up_to_max():
  rule = SeedRounds(3, 20, 0.5)
  # mean 2, s = 1, t(0.975, 2) = 4.302653: half-width 4.302653 / sqrt(3) = 2.484138
  assert half_width([1.0, 2.0, 3.0]) == pytest.approx(2.484138, rel=1e-6)
  assert half_width([1.0]) is None and half_width([]) is None
  wide = judge([1.0, 2.0, 3.0], rule)
  assert wide == {"seeds": 3, "n": 3, "mean": 2.0, "half_width": pytest.approx(2.484138),
                  "low": pytest.approx(2 - 2.484138), "high": pytest.approx(2 + 2.484138),
                  "stopped": None, "adds": 3}
  assert judge([1.0, 2.0, 3.0] * 4, rule)["adds"] == 8  # 12 seeds: 8 more reach max 20
  assert judge([0.0, 10.0] * 10, rule)["stopped"] == "max seeds reached: 20"
  same = judge([0.7, 0.7, 0.7], rule)  # no spread: zero width
  assert same["half_width"] == 0.0 and same["stopped"] == "narrow enough: half-width 0 <= 0.5"
  assert judge([2.0, 2.1, 2.2], rule)["stopped"].startswith("narrow enough: half-width 0.248")


def test_a_failed_member_is_a_seed_spent_without_a_value():
  rule = SeedRounds(3, 6, 0.5)
  got = judge([2.0, None, float("nan")], rule)  # one value: no interval
  assert (got["seeds"], got["n"], got["mean"], got["half_width"]) == (3, 1, 2.0, None)
  assert got["adds"] == 3 and got["stopped"] is None
  assert judge([None] * 6, rule)["stopped"] == "max seeds reached: 6"
  assert judge([2.0, 2.0, None], rule)["stopped"].startswith("narrow enough")


def test_round_zero_is_min_seeds_per_point_and_names_do_not_change_with_rounds():
  sweep = make_sweep(_sweep(_rounds(0.1)), STEPS)
  assert [m.name for m in sweep.members] == [f"{p},seed={s}" for p in (NARROW, WIDE)
                                             for s in range(3)]
  assert [p.label for p in sweep.points] == [NARROW, WIDE]
  assert [m.name for m in sweep.points[1].members] == [f"{WIDE},seed={s}" for s in range(5)]
  assert sweep.definition["seeds"] == _rounds(0.1)
  alone = make_sweep({"config": f"{MLP}:smoke", "seeds": _rounds(0.1), "metric": METRIC})
  assert [p.label for p in alone.points] == ["base"]
  assert [m.name for m in alone.members] == ["seed=0", "seed=1", "seed=2"]


# A sweep of two points.


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
  """A first run of 3 seeds per point sets the asked half-width between the two points'; then
  the seed rounds: lr=0.01 stops narrow after round 0, lr=1 gets 2 seeds (capped by max 5)."""
  root = tmp_path_factory.mktemp("rounds")
  run_sweep(make_sweep(_sweep(3), STEPS), str(root / "first"))
  widths = {}
  for point in (NARROW, WIDE):
    values = [_final(root / "first" / f"{point},seed={s}") for s in range(3)]
    widths[point] = half_width(values)
  assert widths[WIDE] > 4 * widths[NARROW], widths  # the test's premise
  width = math.sqrt(widths[NARROW] * widths[WIDE])
  result = run_sweep(make_sweep(_sweep(_rounds(width)), STEPS), str(root / "rounds"))
  return root, width, result


def test_a_narrow_point_gets_no_seeds_and_a_wide_one_gets_them_up_to_max(swept):
  root, width, result = swept
  assert result.counts() == {"completed": 8} and result.all_completed
  data = _json(root / "rounds" / "sweep.json")
  rounds = data["seed_rounds"]["rounds"]
  assert [r["seeds"] for r in rounds] == [{NARROW: [0, 1, 2], WIDE: [0, 1, 2]}, {WIDE: [3, 4]}]
  assert rounds[0]["after"][NARROW]["stopped"] == (
      f"narrow enough: half-width {rounds[0]['after'][NARROW]['half_width']:.6g} <= {width:g}")
  assert rounds[0]["after"][WIDE]["stopped"] is None and rounds[0]["after"][WIDE]["adds"] == 2
  assert list(rounds[1]["after"]) == [WIDE]
  assert rounds[1]["after"][WIDE]["stopped"] == "max seeds reached: 5"
  points = data["seed_rounds"]["points"]
  assert {p: (s["seeds"], s["rounds"]) for p, s in points.items()} == {
      NARROW: (3, [0]), WIDE: (5, [0, 1])}
  # Every member trained, each round in populations of its own; none beyond max.
  members = {m["name"]: m for m in data["members"]}
  assert sorted(members) == sorted([f"{NARROW},seed={s}" for s in range(3)]
                                   + [f"{WIDE},seed={s}" for s in range(5)])
  assert {n: (m["round"], m["population"]) for n, m in members.items() if m["round"]} == {
      f"{WIDE},seed=3": (1, "r1.p0"), f"{WIDE},seed=4": (1, "r1.p0")}
  assert not (root / "rounds" / f"{WIDE},seed=5").exists()
  # Round 0 is the first run's population: bitwise its values.
  for s in range(3):
    for point in (NARROW, WIDE):
      name = f"{point},seed={s}"
      assert _rows(root / "rounds" / name) == _rows(root / "first" / name), name


def test_the_record_matches_the_member_folders(swept):
  root, width, _ = swept
  section = _json(root / "rounds" / "sweep.json")["seed_rounds"]
  assert section["metric"] == METRIC
  assert section["rule"]["min"] == 3 and section["rule"]["max"] == 5
  assert section["rule"]["ci_half_width"] == width
  for r in section["rounds"]:
    assert r["members"] == [f"{p},seed={s}" for p, seeds in r["seeds"].items() for s in seeds]
    for point, after in r["after"].items():
      values = {n: _final(root / "rounds" / n) for n in after["values"]}
      assert after["values"] == values  # every seed of the point so far, as its folder says
      assert list(values) == [f"{point},seed={s}" for s in range(after["seeds"])]
      assert after["n"] == after["seeds"]
      mean = sum(values.values()) / len(values)
      assert after["mean"] == pytest.approx(mean, rel=1e-12)
      assert after["half_width"] == pytest.approx(half_width(list(values.values())), rel=1e-12)
      assert after["low"] == pytest.approx(mean - after["half_width"])
      want = judge(list(values.values()), SeedRounds(3, 5, width))
      assert {k: v for k, v in after.items() if k != "values"} == want


def test_a_sweep_killed_after_a_decision_and_stopped_in_a_round_ends_as_if_never_stopped(
    swept, tmp_path, disarm):
  root, width, result = swept
  file = tmp_path / "rounds.py"
  file.write_text(f"def get_sweep():\n  return {_sweep(_rounds(width))!r}\n")
  workdir = tmp_path / "rounds"
  flags = [f"--sweep={file}", f"--workdir={workdir}"] + [
      f"--config.{k}={v}" for k, v in STEPS.items()]
  # kill -9 once round 0's decision and round 1's plan are recorded, before round 1 trains.
  killed = run_cli(*flags, cwd=tmp_path, module="gmf_jax.sweep",
                   env={failpoints.ENV: "seed_round@1=SIGKILL"})
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  rounds = _json(workdir / "sweep.json")["seed_rounds"]["rounds"]
  assert "after" in rounds[0] and rounds[1]["seeds"] == {WIDE: [3, 4]}
  assert "after" not in rounds[1] and not (workdir / f"{WIDE},seed=3").exists()
  # SIGTERM inside round 1 (its first evaluation, step 10 of 20): checkpointed, preempted.
  sweep = make_sweep(_sweep(_rounds(width)), STEPS, file=str(file))
  failpoints.arm("eval@1=SIGTERM")
  with pytest.raises(Preempted):
    run_sweep(sweep, str(workdir))
  failpoints.arm(None)
  statuses = {m["name"]: m["status"] for m in _json(workdir / "sweep.json")["members"]}
  assert statuses[f"{WIDE},seed=3"] == "preempted"
  again = run_sweep(sweep, str(workdir))
  assert again.statuses == result.statuses
  got, want = _json(workdir / "sweep.json"), _json(root / "rounds" / "sweep.json")
  assert got["seed_rounds"] == want["seed_rounds"]
  for m in want["members"]:
    assert _rows(workdir / m["name"]) == _rows(root / "rounds" / m["name"]), m["name"]


def test_a_rerun_decides_only_undecided_rounds_from_the_recorded_values(swept, tmp_path):
  root, width, _ = swept
  workdir = tmp_path / "rounds"
  shutil.copytree(root / "rounds", workdir)
  want = _json(workdir / "sweep.json")["seed_rounds"]
  # Round 0 is decided: a changed value of a narrow member must not reopen it. Round 1's
  # decision is dropped, as if killed before it was written: it is taken again, the same.
  summary = _json(workdir / f"{NARROW},seed=0" / "summary.json")
  summary["metrics"]["eval/loss"]["final"] = 100.0
  (workdir / f"{NARROW},seed=0" / "summary.json").write_text(json.dumps(summary))
  data = _json(workdir / "sweep.json")
  del data["seed_rounds"]["rounds"][1]["after"]
  (workdir / "sweep.json").write_text(json.dumps(data))
  result = run_sweep(make_sweep(_sweep(_rounds(width)), STEPS), str(workdir))
  assert result.counts() == {"completed": 8}
  assert _json(workdir / "sweep.json")["seed_rounds"] == want


def test_the_report_shows_each_point_and_the_rounds(swept, tmp_path):
  from gmf_jax.analysis.report import write_report

  root, width, _ = swept
  text = write_report(root / "rounds", out=tmp_path / "report").text
  section = text.split("## Seed rounds", 1)[1]
  assert f"half-width <= {width:g}" in section
  assert f"| {NARROW} | 3 |" in section and "narrow enough: half-width" in section
  assert f"| {WIDE} | 5 |" in section and "max seeds reached: 5" in section
  assert f"| 0 | {NARROW}, {WIDE} | 6 |" in section and f"| 1 | {WIDE} | 2 |" in section


def test_the_shipped_seed_rounds_sweep_passes_its_checks(monkeypatch):
  from gmf_jax.sweep.run import check_populations, plan_sweep
  from gmf_jax.sweep.spec import load_sweep
  from tests.conftest import ROOT

  monkeypatch.chdir(ROOT)
  sweep = load_sweep("sweeps/mlp_seed_rounds.py")
  assert (sweep.seed_rounds.min, sweep.seed_rounds.max) == (3, 12)
  assert len(sweep.members) == 9 and [len(p.members) for p in sweep.points] == [12] * 3
  plan = plan_sweep(sweep, str(ROOT / "runs" / "not-written"))
  check_populations(plan, plan.populations)  # the metric against the config's loss
  assert not (ROOT / "runs" / "not-written").exists()


# Bad input.


UNTIL = {"ci_half_width": 0.1}


@pytest.mark.parametrize("seeds, extra, says", [
    ({"min": 1, "max": 5, "until": UNTIL}, {}, "seeds.min=1 must be an integer >= 2"),
    ({"min": 2.5, "max": 5, "until": UNTIL}, {}, "seeds.min=2.5"),
    ({"min": 4, "max": 3, "until": UNTIL}, {}, "seeds.max=3 must be an integer >= seeds.min=4"),
    ({"min": 3, "max": 5, "until": {"ci_width": 0.1}}, {}, "unknown key 'ci_width'"),
    ({"min": 3, "max": 5, "until": {}}, {}, "seeds.until={} must be a dict"),
    ({"min": 3, "max": 5}, {}, "seeds.until=None must be a dict"),
    ({"min": 3, "max": 5, "until": {"ci_half_width": 0}}, {}, "seeds.until.ci_half_width=0 "),
    ({"min": 3, "max": 5, "until": {"ci_half_width": -0.1}}, {},
     "seeds.until.ci_half_width=-0.1"),
    ({"min": 3, "max": 5, "until": {"ci_half_width": "0.1"}}, {},
     "seeds.until.ci_half_width='0.1'"),
    ({"min": 3, "max": 5, "step": 2, "until": UNTIL}, {}, "seeds has unknown key 'step'"),
    ({"min": 3, "max": 5, "until": UNTIL}, {"metric": None}, "seeds.until needs the sweep's "
                                                             "'metric'"),
    ({"min": 3, "max": 5, "until": UNTIL},
     {"early_terminate": {"type": "hyperband", "min_iter": 10, "eta": 3}},
     "seeds.until together with 'early_terminate' is not defined"),
    ({"min": 3, "max": 5, "until": UNTIL},
     {"pbt": {"interval": 10, "hyperparameters": {"lr": {"values": [0.01, 0.1]}}}},
     "seeds.until together with 'pbt' is not defined"),
    ({"min": 3, "max": 5, "until": UNTIL}, {"metric": {"name": "eval/los", "goal": "minimize"}},
     "metric.name='eval/los'"),
])
def test_bad_seed_rounds_are_refused_before_anything_is_written(tmp_path, seeds, extra, says):
  definition = {**_sweep(seeds), **extra}
  if definition["metric"] is None:
    del definition["metric"]
  with pytest.raises(ConfigError) as info:
    run_sweep(make_sweep(definition, STEPS), str(tmp_path / "bad"))
  assert says in str(info.value) and "\n" not in str(info.value), str(info.value)
  assert not (tmp_path / "bad").exists()
