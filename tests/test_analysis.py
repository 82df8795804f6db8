"""gmf_jax.analysis: loading run folders, statistics over seeds, reports and their commands.

The statistics are checked against independent computations (numpy, scipy) on the same
samples. Loading is checked on a real sweep (the MLP, 3 learning rates x 3 seeds, one of the
rates diverging so its members fail), in which one member is then made to look crashed (its
process gone mid-write: `running` in metadata.json with a dead pid, a half-written last line in
metrics.csv, no summary.json) and one running (this process's identity and a fresh heartbeat).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from gmf_jax import analysis
from gmf_jax.analysis import stats
from gmf_jax.runlog import liveness
from tests.conftest import CONFIGS, ROOT

MLP = str(CONFIGS / "mlp.py")
SMOKE = dict(num_steps=60, steps_per_call=20, log_every_steps=10, eval_every_steps=20,
             progress_bar=False)
LRS = [0.03, 0.1, 1e6]  # 1e6 diverges: those members fail
PLANTED = "gmf_jax_test_config_executed"


def _json(path):
  with open(path) as f:
    return json.load(f)


def _write_json(path, data):
  with open(path, "w") as f:
    json.dump(data, f)


def _dead_pid() -> int:
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  """A real 9-member sweep; then one member crashed, one running, and config.py planted."""
  from gmf_jax.sweep import make_sweep, run_sweep

  root = tmp_path_factory.mktemp("analysis") / "sw"
  definition = {"config": f"{MLP}:smoke", "method": "grid", "seeds": 3,
                "parameters": {"optimizer.learning_rate": {"values": LRS}}}
  run_sweep(make_sweep(definition, SMOKE), str(root))
  crashed, running = root / "lr=0.1,seed=2", root / "lr=0.1,seed=1"
  meta = _json(crashed / "metadata.json")
  meta.update(status="running", end_time=None,
              process={**meta["process"], "pid": _dead_pid()})
  _write_json(crashed / "metadata.json", meta)
  with open(crashed / "metrics.csv", "rb") as f:
    data = f.read()
  with open(crashed / "metrics.csv", "wb") as f:
    f.write(data[:-7])  # cut mid-line, as a kill during a write leaves it
  os.remove(crashed / "summary.json")
  meta = _json(running / "metadata.json")
  meta.update(status="running", end_time=None, process=liveness.process_identity(),
              heartbeat=liveness.heartbeat_record(40))
  _write_json(running / "metadata.json", meta)
  # Every member folder keeps a copy of the config file; loading must never execute one.
  marker = root / PLANTED
  for member in os.listdir(root):
    if os.path.isfile(root / member / "config.json"):
      with open(root / member / "config.py", "w") as f:
        f.write(f"open({str(marker)!r}, 'w').write('x')\nraise SystemExit('executed')\n")
  return root


def test_load_runs_reads_every_member_with_its_true_status(sweep):
  runs = analysis.load_runs(sweep)
  assert len(runs) == 9
  by_name = runs.set_index("name")
  statuses = by_name["status"].to_dict()
  assert {statuses[f"lr=1e+06,seed={s}"] for s in range(3)} == {"failed"}
  assert statuses["lr=0.1,seed=2"] == "crashed"
  assert statuses["lr=0.1,seed=1"] == "running"
  assert [statuses[f"lr=0.03,seed={s}"] for s in range(3)] == ["completed"] * 3
  assert set(runs["sweep"]) == {"mlp"} and set(runs["population"]) == {"p0"}
  assert by_name.loc["lr=0.03,seed=2", "seed"] == 2
  assert by_name.loc["lr=0.03,seed=2", "config.optimizer.learning_rate"] == 0.03
  assert by_name.loc["lr=0.03,seed=2", "config.model.hidden"] == (64,)
  assert "non-finite" in by_name.loc["lr=1e+06,seed=0", "error"]
  # The crashed member has no summary.json: its values come from metrics.csv, minus the cut line.
  assert "no summary.json" in by_name.loc["lr=0.1,seed=2", "problems"]
  assert "half-written" in by_name.loc["lr=0.1,seed=2", "problems"]
  done = _json(sweep / "lr=0.03,seed=0" / "summary.json")["metrics"]
  row = by_name.loc["lr=0.03,seed=0"]
  assert row["final.eval/loss"] == done["eval/loss"]["final"]
  assert row["best.eval/accuracy"] == done["eval/accuracy"]["best"]
  assert row["last_step"] == 60 and row["problems"] == ""
  assert not (sweep / PLANTED).exists()


def test_a_single_run_folder_and_many_folders_load(sweep):
  one = analysis.load_runs(sweep / "lr=0.03,seed=0")
  assert list(one["name"]) == ["."] and one["sweep"].iloc[0] == "mlp"
  both = analysis.load_runs([sweep / "lr=0.03,seed=0", sweep / "lr=0.03,seed=1"])
  assert len(both) == 2
  with pytest.raises(FileNotFoundError, match="not a folder"):
    analysis.load_runs(sweep / "nope")


def test_load_metrics_has_every_row_and_drops_a_half_written_line(sweep):
  metrics = analysis.load_metrics(sweep)
  assert list(metrics.columns) == ["run", "step", "name", "value", "wall_time"]
  member = str(sweep / "lr=0.03,seed=0")
  expected = pd.read_csv(os.path.join(member, "metrics.csv"))
  mine = metrics[metrics["run"] == member].reset_index(drop=True)
  assert len(mine) == len(expected)
  np.testing.assert_array_equal(mine["value"].to_numpy(), expected["value"].to_numpy())
  assert list(mine["name"].astype(str)) == list(expected["name"])
  crashed = str(sweep / "lr=0.1,seed=2")
  with open(os.path.join(crashed, "metrics.csv")) as f:
    whole_lines = f.read().count("\n") - 1  # the header, and the cut line has no newline
  assert (metrics["run"] == crashed).sum() == whole_lines
  assert "half-written" in metrics.attrs["problems"][crashed]
  only = analysis.load_metrics(analysis.load_runs(sweep), names=["eval/loss"])
  assert set(only["name"].astype(str)) == {"eval/loss"}
  assert not (sweep / PLANTED).exists()


def test_load_diagnostics_returns_the_saved_arrays(ensemble):
  run = ensemble / "seed=10"  # weight_stats every 30 of its 60 steps
  arrays = analysis.load_diagnostics(run, "weight_stats", keys=["param_norm"])
  assert sorted(arrays["step"]) == [30, 60] and set(arrays["key"]) == {"param_norm"}
  saved = np.load(run / "diagnostics" / "weight_stats" / "step_60.npz")
  np.testing.assert_array_equal(arrays[arrays["step"] == 60]["value"].iloc[0],
                                saved["param_norm"])


def test_summarize_groups_by_the_swept_key_and_matches_numpy(sweep):
  runs = analysis.load_runs(sweep)
  assert analysis.group_keys(runs) == ["config.optimizer.learning_rate"]
  table = analysis.summarize(runs, "eval/accuracy", status=None)
  assert set(table["config.optimizer.learning_rate"]) == set(LRS)
  row = table[table["config.optimizer.learning_rate"] == 0.03].iloc[0]
  x = runs[runs["config.optimizer.learning_rate"] == 0.03]["final.eval/accuracy"].to_numpy()
  assert row["n"] == 3 and row["group"] == "optimizer.learning_rate=0.03"
  assert row["mean"] == pytest.approx(np.mean(x))
  assert row["std"] == pytest.approx(np.std(x, ddof=1))
  assert row["seeds"] == (0, 1, 2)
  # Completed runs only, by default: the crashed and the running member are left out.
  completed = analysis.summarize(runs, "eval/accuracy")
  assert completed[completed["config.optimizer.learning_rate"] == 0.1]["n"].iloc[0] == 1
  assert 1e6 not in set(completed["config.optimizer.learning_rate"])  # all three failed


def _runs_table(groups: dict[str, np.ndarray], seeds=None, metric="eval/loss"):
  """A table shaped like load_runs' output, for statistics on chosen samples."""
  rows = []
  for lr, values in groups.items():
    for i, v in enumerate(values):
      rows.append({"run": f"/runs/lr={lr},seed={i}", "status": "completed",
                   "seed": i if seeds is None else seeds[lr][i], "config.seed": i,
                   "config.optimizer.learning_rate": lr, f"final.{metric}": v})
  return pd.DataFrame(rows)


def test_summary_statistics_match_independent_computations():
  rng = np.random.default_rng(3)
  x = rng.normal(1.0, 0.2, size=8)
  runs = _runs_table({0.1: x})
  row = analysis.summarize(runs, "eval/loss", seed=7).iloc[0]
  assert row["mean"] == pytest.approx(np.mean(x))
  assert row["std"] == pytest.approx(np.std(x, ddof=1))
  assert row["sem"] == pytest.approx(sps.sem(x))
  assert row["median"] == pytest.approx(np.median(x))
  assert row["iqm"] == pytest.approx(np.mean(np.sort(x)[2:6]))  # the middle half of 8
  expected = sps.bootstrap((x,), np.mean, method="BCa", confidence_level=0.95,
                           rng=stats._rng("all", 7)).confidence_interval
  assert (row["ci_low"], row["ci_high"]) == pytest.approx((expected.low, expected.high))
  assert row["ci_low"] < row["mean"] < row["ci_high"]
  again = analysis.summarize(runs, "eval/loss", seed=7).iloc[0]
  assert (again["ci_low"], again["ci_high"]) == (row["ci_low"], row["ci_high"])  # seeded
  single = analysis.summarize(_runs_table({0.1: x[:1]}), "eval/loss").iloc[0]
  assert single["n"] == 1 and math.isnan(single["ci_low"]) and math.isnan(single["std"])


def test_stat_auc_min_max_use_the_logged_curve():
  runs = pd.DataFrame([{"run": "/r/a", "status": "completed", "seed": 0, "config.x": 1},
                       {"run": "/r/b", "status": "completed", "seed": 1, "config.x": 1}])
  metrics = pd.DataFrame({"run": ["/r/a"] * 3 + ["/r/b"] * 3, "step": [0, 10, 30] * 2,
                          "name": ["eval/loss"] * 6,
                          "value": [3.0, 2.0, 1.0, 4.0, 1.0, 2.0]})
  auc = analysis.summarize(runs, "eval/loss", stat="auc", metrics=metrics).iloc[0]
  expected = [np.trapezoid([3.0, 2.0, 1.0], [0, 10, 30]), np.trapezoid([4.0, 1.0, 2.0],
                                                                       [0, 10, 30])]
  assert auc["mean"] == pytest.approx(np.mean(expected))
  assert analysis.summarize(runs, "eval/loss", stat="min", metrics=metrics).iloc[0][
      "mean"] == pytest.approx(1.0)
  assert analysis.summarize(runs, "eval/loss", stat="max", metrics=metrics).iloc[0][
      "mean"] == pytest.approx(3.5)
  with pytest.raises(ValueError, match="stat='mean' is not one of"):
    analysis.summarize(runs, "eval/loss", stat="mean", metrics=metrics)


def test_paired_comparison_matches_scipy_and_warns_about_five_seeds():
  rng = np.random.default_rng(0)
  a = rng.normal(1.0, 0.1, 5)
  b = a - 0.05 + rng.normal(0, 0.02, 5)  # b is lower (better for a loss) on every seed
  runs = _runs_table({0.1: a, 0.2: b})
  c = analysis.compare(runs, "eval/loss", {"lr": 0.1}, {"optimizer.learning_rate": 0.2})
  assert c.paired and c.n_pairs == 5
  assert c.difference == pytest.approx(np.mean(b - a))
  assert c.tests["ttest_rel"]["pvalue"] == pytest.approx(sps.ttest_rel(b, a).pvalue)
  assert c.tests["wilcoxon"]["pvalue"] == pytest.approx(sps.wilcoxon(b, a).pvalue)
  assert c.tests["wilcoxon"]["pvalue"] == pytest.approx(0.0625)
  expected = sps.bootstrap((b - a,), np.mean, method="BCa",
                           rng=stats._rng(f"{c.a}|{c.b}", 0)).confidence_interval
  assert (c.ci_low, c.ci_high) == pytest.approx((expected.low, expected.high))
  assert any("cannot go below 0.0625" in w and "at least 6 seeds" in w for w in c.warnings)
  assert c.prob_improvement == pytest.approx(np.mean([[bj < ai for ai in a] for bj in b]))
  pooled = np.sqrt((np.var(a, ddof=1) * 4 + np.var(b, ddof=1) * 4) / 8)
  assert c.hedges_g == pytest.approx((b.mean() - a.mean()) / pooled * (1 - 3 / (4 * 10 - 9)))
  assert "b is better than a" in c.verdict
  assert "0.0625" in str(c)


def test_unpaired_comparison_uses_welch_and_mann_whitney():
  rng = np.random.default_rng(1)
  a, b = rng.normal(0.9, 0.02, 6), rng.normal(0.8, 0.05, 9)
  runs = _runs_table({0.1: a, 0.2: b}, seeds={0.1: list(range(6)),
                                              0.2: list(range(100, 109))})
  c = analysis.compare(runs, "eval/loss", "optimizer.learning_rate=0.1",
                       "optimizer.learning_rate=0.2")
  assert not c.paired
  assert c.difference == pytest.approx(b.mean() - a.mean())
  assert c.tests["welch_ttest"]["pvalue"] == pytest.approx(
      sps.ttest_ind(b, a, equal_var=False).pvalue)
  assert c.tests["mannwhitneyu"]["pvalue"] == pytest.approx(
      sps.mannwhitneyu(b, a, alternative="two-sided").pvalue)
  expected = sps.bootstrap((a, b), lambda x, y, axis=-1: y.mean(axis) - x.mean(axis),
                           method="BCa", rng=stats._rng(f"{c.a}|{c.b}", 0)).confidence_interval
  assert (c.ci_low, c.ci_high) == pytest.approx((expected.low, expected.high))
  with pytest.raises(ValueError, match="no group 'lr=9'"):
    analysis.compare(runs, "eval/loss", "lr=9", "optimizer.learning_rate=0.2")
  with pytest.raises(ValueError, match="'nope' is not a config key"):
    analysis.compare(runs, "eval/loss", {"nope": 1}, {"lr": 0.2})


def test_holm_matches_a_hand_computation():
  adjusted = analysis.holm([0.01, 0.04, 0.03, 0.005, math.nan])
  np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02])
  assert math.isnan(adjusted[4])
  assert list(analysis.holm([0.5, 0.9])) == [1.0, 1.0]


def test_compare_groups_corrects_against_the_best():
  rng = np.random.default_rng(2)
  groups = {lr: rng.normal(1.0 + 0.1 * i, 0.05, 6) for i, lr in enumerate([0.1, 0.2, 0.3])}
  runs = _runs_table(groups)
  table = analysis.compare_groups(runs, "eval/loss")
  assert table.attrs["baseline"] == "optimizer.learning_rate=0.1"  # the lowest loss
  raw = [sps.ttest_rel(groups[lr], groups[0.1]).pvalue for lr in (0.2, 0.3)]
  order = {g: i for i, g in enumerate(table["group"])}
  mine = [table["pvalue"].iloc[order[f"optimizer.learning_rate={lr}"]] for lr in (0.2, 0.3)]
  assert mine == pytest.approx(raw)
  np.testing.assert_allclose(table["pvalue_holm"], analysis.holm(table["pvalue"]))


def test_curve_stats_band_matches_a_t_interval(sweep):
  runs = analysis.load_runs(sweep)
  metrics = analysis.load_metrics(runs)
  curves = analysis.curve_stats(metrics, runs, "eval/loss")
  point = curves[(curves["group"] == "optimizer.learning_rate=0.03") & (curves["step"] == 40)]
  rows = metrics[(metrics["name"] == "eval/loss") & (metrics["step"] == 40)]
  members = [str(sweep / f"lr=0.03,seed={s}") for s in range(3)]
  values = rows[rows["run"].isin(members)]["value"].to_numpy()
  assert point["n"].iloc[0] == 3 and point["mean"].iloc[0] == pytest.approx(values.mean())
  half = sps.t.ppf(0.975, 2) * sps.sem(values)
  assert point["high"].iloc[0] == pytest.approx(values.mean() + half)
  assert point["low"].iloc[0] == pytest.approx(values.mean() - half)


def test_write_report_writes_markdown_tables_and_figures(sweep, tmp_path):
  report = analysis.write_report(sweep, out=tmp_path / "report")
  assert report.metric == "eval/accuracy" and "cross_entropy" in report.metric_reason
  text = report.text
  assert "Metric: **eval/accuracy**" in text and "## Best setting" in text
  assert "optimizer.learning_rate=0.03" in text
  for name, status in [("lr=1e+06,seed=0", "failed"), ("lr=0.1,seed=2", "crashed"),
                       ("lr=0.1,seed=1", "running")]:
    assert f"| {name} | {status} |" in text
  groups = pd.read_csv(report.groups_csv)
  assert set(groups["config.optimizer.learning_rate"]) == {0.03, 0.1}
  assert len(pd.read_csv(report.comparisons_csv)) == 1
  assert report.figures and all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
                                for p in report.figures)
  for path in report.figures:
    assert f"]({os.path.basename(path)})" in text
  assert not (sweep / PLANTED).exists()


def test_report_and_compare_commands(sweep, tmp_path):
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  done = subprocess.run([sys.executable, "-m", "analyze.report", str(sweep),
                         "--metric=eval/loss", f"--out={tmp_path / 'r'}"],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
  assert done.returncode == 0, done.stderr
  assert "metric: eval/loss (chosen with --metric)" in done.stdout
  assert (tmp_path / "r" / "report.md").exists()
  bad = subprocess.run([sys.executable, "-m", "analyze.report", str(sweep), "--metric=eval/x"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
  assert bad.returncode == 2 and bad.stderr.count("\n") == 1
  assert "--metric=eval/x is not a metric" in bad.stderr and "eval/loss" in bad.stderr
  pair = subprocess.run([sys.executable, "-m", "analyze.compare", str(sweep / "lr=0.03,seed=0"),
                         str(sweep / "lr=0.03,seed=1")], capture_output=True, text=True,
                        cwd=ROOT, env=env, timeout=300)
  assert pair.returncode == 0, pair.stderr
  assert "eval/accuracy (final; higher is better)" in pair.stdout
  assert "has 1 run(s): no spread" in pair.stdout
  assert not (sweep / PLANTED).exists()


def test_loading_reads_each_file_once(sweep):
  """What keeps load_runs fast on thousands of runs (benchmarks/analysis_speed.py times it)."""
  import builtins

  opened = []
  real_open = builtins.open

  def counting_open(path, *args, **kwargs):
    opened.append(os.fspath(path))
    return real_open(path, *args, **kwargs)

  builtins.open = counting_open
  try:
    runs = analysis.load_runs(sweep)
  finally:
    builtins.open = real_open
  opened = [p for p in opened if p.startswith(str(sweep))]  # not the liveness checks' /proc
  assert len(opened) == len(set(opened))  # no file read twice (sweep.json once, too)
  assert sum(p.endswith("sweep.json") for p in opened) == 1
  assert len(runs) == 9


def test_a_run_without_config_json_does_not_become_a_group_of_its_own(sweep, tmp_path):
  import shutil

  copy = tmp_path / "sw"
  shutil.copytree(sweep, copy)
  os.remove(copy / "lr=1e+06,seed=0" / "config.json")  # a run cut before its config
  runs = analysis.load_runs(copy)
  assert "config.json missing" in runs.set_index("name").loc["lr=1e+06,seed=0", "problems"]
  assert analysis.group_keys(runs) == ["config.optimizer.learning_rate"]
  report = analysis.write_report(copy, out=tmp_path / "r")
  assert [os.path.basename(p) for p in report.figures if "vs_" in p] == [
      "vs_optimizer.learning_rate.png"]


def test_a_malformed_metrics_line_is_dropped_and_named_not_fatal(sweep, tmp_path):
  import shutil

  copy = tmp_path / "sw"
  shutil.copytree(sweep, copy)
  path = copy / "lr=0.03,seed=1" / "metrics.csv"
  lines = path.read_bytes().split(b"\n")
  before = len(lines) - 2  # less the header and the empty string after the last newline
  lines[5:5] = [b"\x00" * 12, b"30,eval/lo", b"", b"1.5,train/loss,0.1,1.0"]
  path.write_bytes(b"\n".join(lines))
  metrics = analysis.load_metrics(copy)
  member = str(path.parent)
  assert (metrics["run"] == member).sum() == before
  assert "4 malformed line(s) dropped" in metrics.attrs["problems"][member]
  assert "eval/lo" not in set(metrics["name"].astype(str))
  other = str(copy / "lr=0.03,seed=0")
  assert (metrics["run"] == other).sum() == len(pd.read_csv(os.path.join(other, "metrics.csv")))
  bad_json = copy / "lr=0.03,seed=2" / "metadata.json"
  bad_json.write_text(json.dumps({"status": "running", "process": [1]}))
  runs = analysis.load_runs(copy)
  row = runs.set_index("name").loc["lr=0.03,seed=2"]
  assert row["status"] == "unknown" and "unreadable record" in row["problems"]


def test_groups_are_told_apart_by_value_and_a_repeated_index_counts_once():
  runs = _runs_table({0.00123456712: [1.0, 1.1, 1.2], 0.00123456749: [2.0, 2.1, 2.2]})
  table = analysis.summarize(runs, "eval/loss")
  assert list(table["n"]) == [3, 3] and table["group"].nunique() == 2
  doubled = pd.concat([runs.iloc[:3], runs.iloc[3:].reset_index(drop=True)])  # 0-2 twice
  assert doubled.index.duplicated().any()
  again = analysis.summarize(doubled, "eval/loss")
  assert list(again["n"]) == [3, 3]
  assert sorted(again["mean"]) == pytest.approx([1.1, 2.1])


def test_a_few_shared_seeds_among_many_compare_unpaired():
  rng = np.random.default_rng(4)
  a, b = rng.normal(1.0, 0.05, 10), rng.normal(0.9, 0.05, 10)
  runs = _runs_table({0.1: a, 0.2: b}, seeds={0.1: list(range(10)), 0.2: list(range(8, 18))})
  c = analysis.compare(runs, "eval/loss", {"lr": 0.1}, {"lr": 0.2})
  assert not c.paired and c.n_a == 10 and c.n_b == 10
  assert c.difference == pytest.approx(b.mean() - a.mean())
  assert any("only 2 seed(s) are shared" in w for w in c.warnings)


def test_a_dict_baseline_is_not_compared_with_itself_and_nulls_group():
  rng = np.random.default_rng(5)
  runs = _runs_table({0.1: rng.normal(1, 0.1, 6), 0.2: rng.normal(2, 0.1, 6)})
  table = analysis.compare_groups(runs, "eval/loss", {"lr": 0.2})
  assert list(table["group"]) == ["optimizer.learning_rate=0.1"]
  runs["config.optimizer.grad_clip_norm"] = [None] * 6 + [1.0] * 6
  runs.loc[0, "config.optimizer.grad_clip_norm"] = math.nan  # how pandas may hold a null
  labels = set(analysis.summarize(runs, "eval/loss")["group"])
  assert labels == {"optimizer.learning_rate=0.1, optimizer.grad_clip_norm=None",
                    "optimizer.learning_rate=0.2, optimizer.grad_clip_norm=1"}
  c = analysis.compare(runs, "eval/loss", {"optimizer.grad_clip_norm": None},
                       {"optimizer.grad_clip_norm": 1.0})
  assert c.n_a == 6 and c.n_b == 6
  runs.loc[runs["config.optimizer.learning_rate"] == 0.2, "status"] = "failed"
  with pytest.raises(ValueError, match="no completed runs with a finite eval/loss"):
    analysis.compare(runs, "eval/loss", {"lr": 0.1}, {"lr": 0.2})


def test_report_command_refuses_an_unwritable_out_in_one_line(sweep, tmp_path):
  (tmp_path / "afile").write_text("x")
  env = {**os.environ, "PYTHONPATH": str(ROOT)}
  bad = subprocess.run([sys.executable, "-m", "analyze.report", str(sweep),
                        f"--out={tmp_path / 'afile'}"], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=300)
  assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "afile" in bad.stderr


def test_pairing_needs_the_shared_seeds_to_be_most_of_each_group():
  # 4 runs against 20 that share all 4 seeds: pairing would throw 16 of the 20 away, and
  # answer a question about 4 seeds; the README's rule pairs only when the shared seeds are
  # at least 75% of each group.
  rng = np.random.default_rng(6)
  a, b = rng.normal(1.0, 0.05, 4), rng.normal(0.9, 0.05, 20)
  runs = _runs_table({0.1: a, 0.2: b}, seeds={0.1: list(range(4)), 0.2: list(range(20))})
  c = analysis.compare(runs, "eval/loss", {"lr": 0.1}, {"lr": 0.2})
  assert not c.paired and (c.n_a, c.n_b) == (4, 20)
  assert c.difference == pytest.approx(b.mean() - a.mean())
  assert c.tests["welch_ttest"]["pvalue"] == pytest.approx(
      sps.ttest_ind(b, a, equal_var=False).pvalue)
  assert any("only 4 seed(s) are shared" in w for w in c.warnings)
  # 4 shared of 4 and 5 is 80% of the larger group: paired, on the 4.
  runs = _runs_table({0.1: a, 0.2: b[:5]}, seeds={0.1: list(range(4)), 0.2: list(range(5))})
  c = analysis.compare(runs, "eval/loss", {"lr": 0.1}, {"lr": 0.2})
  assert c.paired and c.n_pairs == 4 and (c.n_a, c.n_b) == (4, 4)
  assert c.difference == pytest.approx(np.mean(b[:4] - a))


def test_a_nan_row_survives_the_lenient_parser_that_a_torn_line_sends_it_to(tmp_path):
  # A diverged member logs `nan` (the writer's str(float("nan"))); a torn line elsewhere in the
  # file sends load_metrics to its line-by-line parser, which must keep the NaN as a value.
  run = tmp_path / "run"
  run.mkdir()
  _write_json(run / "config.json", {"seed": 0})
  (run / "metrics.csv").write_text(
      "step,name,value,wall_time\n"
      "10,train/loss,1.5,1796165625.0\n"
      "20,train/loss,nan,1796165626.0\n"
      "20,eval/lo\n"  # torn: the rest of the line never reached the disk
      "30,eval/loss,0.4x,1796165627.0\n"  # a value the writer never writes
      "30,train/loss,inf,1796165627.0\n"
      "40,train/loss,nan,1796165628.0\n")
  metrics = analysis.load_metrics(run)
  assert list(metrics["step"]) == [10, 20, 30, 40]
  assert list(metrics["name"].astype(str)) == ["train/loss"] * 4
  values = metrics["value"].to_numpy()
  assert values[0] == 1.5 and math.isnan(values[1]) and values[2] == math.inf
  assert math.isnan(values[3])
  assert metrics.attrs["problems"][str(run)] == "metrics.csv: 2 malformed line(s) dropped"
  row = analysis.load_runs(run).iloc[0]  # no summary.json: its values come from the same rows
  assert math.isnan(row["final.train/loss"]) and row["best.train/loss"] == 1.5
  assert "2 malformed line(s) dropped" in row["problems"]


@pytest.fixture(scope="module")
def ensemble(sweep):
  """A real 2-seed ensemble beside the sweep, of the same setting as its lr=0.03 members but
  from the full config (diagnostics on, where the sweep has none: weight_stats every 30 steps)
  and of other seeds."""
  from gmf_jax import load_config, run

  folder = sweep.parent / "ens"
  config = load_config(MLP, {**SMOKE, "num_seeds": 2, "seed": 10, "lr": 0.03,
                             "diagnostics.weight_stats.every_steps": 30})
  run(config, str(folder))
  return folder


def test_a_real_ensemble_beside_a_real_sweep_groups_by_setting(sweep, ensemble, capsys):
  configs = [_json(ensemble / "seed=10" / "config.json"),
             _json(sweep / "lr=0.03,seed=0" / "config.json")]
  assert configs[0]["diagnostics"] and not configs[1]["diagnostics"]  # what used to split
  runs = analysis.load_runs([ensemble, sweep])
  assert analysis.group_keys(runs) == ["config.optimizer.learning_rate"]
  table = analysis.summarize(runs, "eval/accuracy").set_index("group")
  assert table.loc["optimizer.learning_rate=0.03", "seeds"] == (0, 1, 2, 10, 11)
  assert table.loc["optimizer.learning_rate=0.1", "n"] == 1  # one completed member
  # `python -m analyze.report` (its command line is tested above), run in this process.
  from analyze.report import main

  capsys.readouterr()
  code = main([str(sweep.parent), f"--out={sweep.parent / 'report'}"])
  out, err = capsys.readouterr()
  assert code == 0, err
  assert "best: optimizer.learning_rate=0.03:" in out and "n=5" in out
  assert "nan" not in out
