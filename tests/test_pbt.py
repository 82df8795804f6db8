"""Population-based training: the exploit plan against a hand computation, an exploit that
copies exactly the source member's state and changes only the named hyperparameters,
lineage.json against sweep.json, the hparams/ rows, a PBT sweep stopped and run again, and the
bad inputs."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest

from gmf_jax import ConfigError, Preempted, failpoints
from gmf_jax.sweep import make_sweep, run_sweep
from gmf_jax.sweep.early_stop import Metric
from gmf_jax.sweep.pbt import Pbt, Space
from tests.conftest import CONFIGS

MLP = str(CONFIGS / "mlp.py")
STEPS = dict(num_steps=40, steps_per_call=10, log_every_steps=10, eval_every_steps=10,
             progress_bar=False)
STEPS["checkpoint.every_steps"] = 10
LR = "optimizer.learning_rate"


def _sweep(**pbt):
  return {"config": f"{MLP}:smoke", "method": "grid", "name": "pbt",
          "parameters": {"lr": {"values": [0.001, 0.01, 0.1, 0.3]}},
          "metric": {"name": "eval/loss", "goal": "minimize"},
          "pbt": {"interval": 10, "quantile": 0.25,
                  "hyperparameters": {"lr": {"distribution": "log_uniform_values",
                                             "min": 0.001, "max": 0.5}}, **pbt}}


def _json(path):
  with open(path) as f:
    return json.load(f)


def _rows(folder, prefixes=("train/", "eval/", "hparams/")):
  with open(os.path.join(folder, "metrics.csv")) as f:
    return sorted((int(r["step"]), r["name"], r["value"]) for r in csv.DictReader(f)
                  if r["name"].startswith(prefixes))


@pytest.fixture
def disarm():
  yield
  failpoints.arm(None)


def test_the_bottom_quantile_copies_the_top_and_perturbs_the_named_values():
  space = Space(distribution=("log_uniform_values", 0.001, 0.5, None))
  pbt = Pbt(10, 0.25, (2.0,), 0.0, {LR: space}, Metric("eval/loss", "minimize"), seed=7)
  values = [0.9, 0.1, None, 0.5, 0.2, float("nan"), 0.3, 0.05]
  hparams = [{LR: 0.01 * (i + 1)} for i in range(8)]
  plan = pbt.plan(10, "p0", values, hparams, list(range(8)))
  # 8 members, quantile 0.25: 2 copy from the best 2 (7: 0.05, 1: 0.1); the worst 2 are the
  # failed 2 and the NaN 5 (missing and non-finite rank last, by sweep order).
  assert sorted(e["member"] for e in plan) == [2, 5]
  for e in plan:
    assert e["from"] in (7, 1) and e["before"] == hparams[e["member"]]
    want = min(2.0 * hparams[e["from"]][LR], 0.5)  # the source's value x 2, clipped
    assert e["after"] == {LR: float(np.float32(want))}
  again = pbt.plan(10, "p0", values, hparams, list(range(8)))
  assert again == plan  # the sweep's seed and the step decide
  other = Pbt(10, 0.25, (2.0,), 1.0, {LR: space}, pbt.metric, seed=7)
  for e in other.plan(10, "p0", values, hparams, list(range(8))):
    assert 0.001 <= e["after"][LR] <= 0.5  # resampled from the distribution
  listed = Space(values=(0.1, 0.2, 0.4))
  assert [listed.perturb(0.2, f) for f in (0.8, 1.2, 1.0)] == [0.1, 0.4, 0.2]
  assert listed.perturb(0.4, 1.2) == 0.4  # the end of the list


@pytest.fixture(scope="module")
def pbt_sweep(tmp_path_factory):
  root = tmp_path_factory.mktemp("pbt")
  result = run_sweep(make_sweep(_sweep(), STEPS), str(root / "pbt"))
  return root / "pbt", result


def test_an_exploit_copies_the_source_state_bitwise_and_only_the_named_values(pbt_sweep):
  root, result = pbt_sweep
  assert result.counts() == {"completed": 4}
  sweep = _json(root / "sweep.json")
  events = sweep["pbt"]["events"]
  assert [e["step"] for e in events] == [10, 20, 30]  # one exploit per interval (4 x 0.25)
  names = _json(root / "populations" / "p0" / "population.json")["members"]
  e = events[-1]  # step 30: the population's checkpoint of that step holds its result
  state = ocp.StandardCheckpointer().restore(str(root / "populations" / "p0" / "checkpoints"
                                                 / "30" / "state"))
  i, j = names.index(e["member"]), names.index(e["from"])
  for part in ("params", "opt_state"):
    for a, b in zip(_leaves(state[part]), _leaves(state[part]), strict=True):
      np.testing.assert_array_equal(a[i], b[j])  # bitwise the source's
  hparams = state["hparams"]
  assert float(hparams[LR][i]) == pytest.approx(e["after"][LR], rel=1e-6)
  own = _json(root / e["member"] / "config.json")["optimizer"]
  assert float(hparams["optimizer.momentum"][i]) == pytest.approx(own["momentum"])
  assert float(hparams["optimizer.weight_decay"][i]) == pytest.approx(own["weight_decay"])


def _leaves(tree):
  import jax

  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_lineage_and_hparams_rows_follow_the_recorded_exploits(pbt_sweep):
  root, _ = pbt_sweep
  sweep = _json(root / "sweep.json")
  for m in sweep["members"]:
    lineage = _json(root / m["name"] / "lineage.json")
    mine = [e for e in sweep["pbt"]["events"] if e["member"] == m["name"]]
    assert lineage["member"] == m["name"]
    assert lineage["exploits"] == [{k: e[k] for k in ("step", "from", "before", "after")}
                                   for e in mine]
    assert lineage["initial"][LR] == pytest.approx(m["overrides"][LR])
    # The value in use at every log step: the initial one, then each exploit's from the next
    # step on; train/learning_rate follows it.
    rows = {(s, n): float(v) for s, n, v in _rows(root / m["name"])}
    want = lineage["initial"][LR]
    for step in range(10, 41, 10):
      assert rows[(step, f"hparams/{LR}")] == pytest.approx(want, rel=1e-6), (m["name"], step)
      for e in mine:
        if e["step"] == step:
          want = e["after"][LR]
    last = [e for e in mine if e["step"] < 40]
    if last:  # after an exploit the logged rate is the new peak's (cosine schedule)
      assert rows[(40, "train/learning_rate")] < last[-1]["after"][LR]


def test_a_pbt_sweep_stopped_and_run_again_ends_as_if_never_stopped(pbt_sweep, tmp_path,
                                                                    disarm):
  root, _ = pbt_sweep
  workdir = str(tmp_path / "pbt")
  failpoints.arm("eval@3=SIGTERM")  # the third evaluation (step 30), after two exploits
  with pytest.raises(Preempted):
    run_sweep(make_sweep(_sweep(), STEPS), workdir)
  failpoints.arm(None)
  assert run_sweep(make_sweep(_sweep(), STEPS), workdir).counts() == {"completed": 4}
  assert _json(os.path.join(workdir, "sweep.json"))["pbt"] == _json(root / "sweep.json")["pbt"]
  for m in _json(root / "sweep.json")["members"]:
    assert _rows(os.path.join(workdir, m["name"])) == _rows(root / m["name"]), m["name"]


@pytest.mark.parametrize("pbt, overrides, says", [
    ({"quantile": 0.6}, {}, "pbt.quantile=0.6"),
    ({"quantile": 0}, {}, "pbt.quantile=0"),
    ({"perturb": [0.8, 0]}, {}, "pbt.perturb=[0.8, 0]"),
    ({"resample_probability": 2}, {}, "pbt.resample_probability=2"),
    ({"interval": 15}, {}, "pbt.interval=15 is not an evaluation step"),
    ({"interval": 40}, {}, "pbt.interval=40 must be below num_steps=40"),
    ({"hyperparameters": {"model.hidden": {"values": [32, 64]}}}, {},
     "pbt cannot explore 'model.hidden'"),
    ({"hyperparameters": {"optimizer.momentum": {"values": [0.5, 0.9]}}},
     {"optimizer.momentum": 0.0, "optimizer.nesterov": False},
     "pbt cannot explore 'optimizer.momentum'"),
    ({"hyperparameters": {"lr": {"distribution": "log_uniform_values", "min": 0}}}, {},
     "needs 'max'"),
    ({"hyperparameters": {"nope": {"values": [1.0]}}}, {}, "'nope' is not a key"),
    ({"early": True}, {}, "'pbt' and 'early_terminate' together"),
    ({"no_metric": True}, {}, "pbt needs the sweep's 'metric'"),
    ({"every": 10}, {}, "pbt has unknown field 'every'"),
])
def test_bad_pbt_is_refused_before_anything_is_written(tmp_path, pbt, overrides, says):
  definition = _sweep()
  if pbt.pop("early", False):
    definition["early_terminate"] = {"type": "hyperband", "min_iter": 10}
  if pbt.pop("no_metric", False):
    del definition["metric"]
  definition["pbt"] = {**definition["pbt"], **pbt}
  with pytest.raises(ConfigError) as info:
    run_sweep(make_sweep(definition, {**STEPS, **overrides}), str(tmp_path / "bad"))
  assert says in str(info.value) and "\n" not in str(info.value), str(info.value)
  assert not (tmp_path / "bad").exists()


def test_a_members_line_of_descent_goes_back_through_its_copies():
  from gmf_jax.sweep.replay import lineage_timeline

  initial = {"a": {LR: 0.1}, "b": {LR: 0.2}, "c": {LR: 0.3}}
  events = [{"step": 10, "member": "a", "from": "b", "after": {LR: 0.25}},
            {"step": 20, "member": "c", "from": "a", "after": {LR: 0.5}},
            {"step": 30, "member": "a", "from": "c", "after": {LR: 0.05}}]
  # a's weights at the end: c's at 30, which were a's at 20, which were b's at 10.
  assert lineage_timeline("a", events, initial, 41) == (
      "b", [(0, {LR: 0.2}), (10, {LR: 0.25}), (20, {LR: 0.5}), (30, {LR: 0.05})])
  assert lineage_timeline("b", events, initial, 41) == ("b", [(0, {LR: 0.2})])
  assert lineage_timeline("a", events, initial, 20) == ("b", [(0, {LR: 0.2}), (10, {LR: 0.25})])


def test_a_replay_follows_the_members_history_as_one_run(pbt_sweep, tmp_path):
  from gmf_jax.sweep.replay import lineage_timeline
  from tests.conftest import run_cli

  root, _ = pbt_sweep
  sweep = _json(root / "sweep.json")
  events = sweep["pbt"]["events"]
  name = events[-1]["member"]  # copied someone at step 30
  shutil.copytree(root, tmp_path / "pbt")  # a sweep made from a dict: give it a file
  file = tmp_path / "pbt.py"
  file.write_text(f"def get_sweep():\n  return {_sweep()!r}\n")
  data = _json(tmp_path / "pbt" / "sweep.json")
  data["file"] = str(file)
  (tmp_path / "pbt" / "sweep.json").write_text(json.dumps(data))
  done = run_cli(f"--replay={tmp_path / 'pbt' / name}", f"--workdir={tmp_path / 'replay'}",
                 cwd=tmp_path, module="gmf_jax.sweep")
  assert done.returncode == 0, done.stderr[-2000:]
  initial = {m["name"]: _json(root / m["name"] / "lineage.json")["initial"]
             for m in sweep["members"]}
  origin, timeline = lineage_timeline(name, events, initial, 41)
  assert len(timeline) >= 2
  rows = {(s, n): float(v) for s, n, v in _rows(tmp_path / "replay")}
  for step in range(10, 41, 10):  # the value in use at each log step, along the line
    want = [v for s, v in timeline if s < step][-1][LR]
    assert rows[(step, f"hparams/{LR}")] == pytest.approx(want, rel=1e-6), step
  # Until the first copy it is the root member's own run (vmapped there: to 1e-5).
  first = timeline[1][0]
  mine = {(s, n): float(v) for s, n, v in _rows(root / origin) if s <= first}
  for key, value in mine.items():
    assert rows[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
  config = _json(tmp_path / "replay" / "config.json")
  assert config["piecewise"]["optimizer"]["learning_rate"]["steps"] == [s for s, _ in
                                                                      timeline[1:]]


def test_a_replay_of_a_folder_that_is_no_pbt_member_is_refused(tmp_path):
  from tests.conftest import run_cli

  done = run_cli(f"--replay={tmp_path / 'nothing'}", cwd=tmp_path, module="gmf_jax.sweep")
  assert done.returncode == 2 and "not a member of a PBT sweep" in done.stderr


def test_the_report_draws_the_family_tree(pbt_sweep, tmp_path):
  from matplotlib.collections import LineCollection

  from gmf_jax.analysis import write_report
  from gmf_jax.analysis.plots import plot_pbt_lineage

  root, _ = pbt_sweep
  report = write_report(root, out=tmp_path / "report")
  assert str(tmp_path / "report" / "pbt_lineage.png") in report.figures
  text = open(report.markdown).read()
  events = _json(root / "sweep.json")["pbt"]["events"]
  assert "## Population-based training" in text and f"{len(events)} copies" in text
  initial = {m: _json(root / m / "lineage.json")["initial"]
             for m in _json(root / "sweep.json")["populations"]["p0"]}
  fig = plot_pbt_lineage(events, initial, 40)
  ax = fig.axes[0]
  lines = [c for c in ax.collections if isinstance(c, LineCollection)][0]
  assert len(lines.get_segments()) == 4  # a line per member
  dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
  assert len(dashed) == len(events)
  for line, e in zip(dashed, events, strict=True):
    assert list(line.get_xdata()) == [e["step"], e["step"]]
    assert line.get_ydata()[1] == pytest.approx(e["after"][LR])


def test_the_shipped_pbt_sweep_passes_its_checks(monkeypatch):
  from gmf_jax.sweep.run import check_populations, plan_sweep
  from gmf_jax.sweep.spec import load_sweep
  from tests.conftest import ROOT

  monkeypatch.chdir(ROOT)
  sweep = load_sweep("sweeps/mlp_pbt.py")
  assert sweep.pbt.steps(5000) == [1000, 2000, 3000, 4000]
  plan = plan_sweep(sweep, str(ROOT / "runs" / "not-written"))
  check_populations(plan, plan.populations)  # every key explorable in every member
  assert not (ROOT / "runs" / "not-written").exists()


def test_the_report_judges_a_sweep_by_its_metric(pbt_sweep, tmp_path):
  from gmf_jax.analysis import write_report

  root, _ = pbt_sweep
  report = write_report(root, out=tmp_path / "report")
  assert report.metric == "eval/loss" and "sweep.json" in report.metric_reason
