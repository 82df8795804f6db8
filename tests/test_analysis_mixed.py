"""gmf_jax.analysis on folders of mixed runs: an ensemble beside a sweep, runs of other datasets
or losses, groups of one run, a comparison whose sides pool other swept values, a bad --out.

The run folders here are synthetic but shaped like real ones: config.json is what a run of the
config file writes (`load_config(...).to_dict()` through JSON, plus the keys an ensemble or a
sweep sets: seed, wandb.group), with metadata.json, summary.json and metrics.csv beside it.
`tests/test_analysis.py` loads a real ensemble beside a real sweep.
"""

from __future__ import annotations

import copy
import functools
import json
import os

import numpy as np
import pandas as pd
import pytest

from gmf_jax import analysis
from tests.conftest import CONFIGS

MLP = str(CONFIGS / "mlp.py")
VAE = str(CONFIGS / "vae.py")


@functools.cache
def _base(path: str) -> dict:
  from gmf_jax import load_config

  return json.loads(json.dumps(load_config(path).to_dict()))


def _config(path: str, **keys) -> dict:
  """config.json as a run of `path` (`file.py[:variant]`) writes it, with dotted `keys` set."""
  config = copy.deepcopy(_base(path))
  for key, value in keys.items():
    *parents, last = key.split(".")
    node = config
    for name in parents:
      node = node.setdefault(name, {})
    node[last] = value
  return config


def _write(path, data) -> None:
  with open(path, "w") as f:
    json.dump(data, f)


def _write_run(folder, config: dict, values: dict[str, float], status="completed") -> None:
  """A run folder: config.json, metadata.json, summary.json and metrics.csv (one eval row per
  metric, at the last step)."""
  os.makedirs(folder)
  step = config["num_steps"]
  _write(os.path.join(folder, "config.json"), config)
  _write(os.path.join(folder, "metadata.json"),
         {"status": status, "seed": config["seed"], "error": None,
          "start_time": "2026-12-01T00:00:00+00:00", "end_time": "2026-12-01T00:01:00+00:00"})
  _write(os.path.join(folder, "summary.json"),
         {"metrics": {name: {"final": v, "final_step": step, "best": v, "best_step": step}
                      for name, v in values.items()}})
  with open(os.path.join(folder, "metrics.csv"), "w") as f:
    f.write("step,name,value,wall_time\n")
    f.writelines(f"{step},{name},{v!r},1796165625.0\n" for name, v in values.items())


def _ensemble(root, config: dict, values: dict[int, float], metric="eval/accuracy") -> None:
  """A seed ensemble's members (`<root>/seed=<s>`), as `--config.num_seeds` writes them."""
  for seed, value in values.items():
    _write_run(root / f"seed={seed}", {**config, "seed": seed,
                                       "wandb": {**config["wandb"], "group": config["name"]}},
               {metric: value})


def _sweep(root, name: str, points: list[tuple[dict, dict[int, float]]],
           metric="eval/accuracy") -> None:
  """A sweep's members (`<root>/<key=value,...>,seed=<s>`) and its sweep.json."""
  members = []
  for config, values in points:
    point = ",".join(f"{k}={v}" for k, v in config.pop("_point").items())
    for seed, value in values.items():
      folder = f"{point},seed={seed}"
      _write_run(root / folder, {**config, "seed": seed,
                                 "wandb": {**config["wandb"], "group": name}}, {metric: value})
      members.append({"folder": folder, "name": folder, "population": "p0"})
  _write(root / "sweep.json", {"definition": {"name": name}, "members": members})


def _point(path: str, **keys) -> dict:
  return {**_config(path, **keys), "_point": {k.split(".")[-1]: v for k, v in keys.items()}}


def _ensemble_and_sweep(root) -> None:
  """What trust-mixed-analysis makes: a 4-seed smoke ensemble and a 2 x 2 sweep of the full
  config (its diagnostics on, 200 steps) side by side."""
  _ensemble(root / "ens", _config(f"{MLP}:smoke"), {0: 0.86, 1: 0.87, 2: 0.84, 3: 0.83})
  _sweep(root / "sw", "two", [
      (_point(MLP, **{"optimizer.learning_rate": 0.01}, num_steps=200), {0: 0.90, 1: 0.91}),
      (_point(MLP, **{"optimizer.learning_rate": 0.02}, num_steps=200), {0: 0.92, 1: 0.93})])


def _report(args, capsys) -> tuple[int, str, str]:
  """`python -m analyze.report ARGS`, run in this process: (exit status, stdout, stderr)."""
  from analyze.report import main

  capsys.readouterr()
  code = main([str(a) for a in args])
  out, err = capsys.readouterr()
  return code, out, err


def test_an_ensemble_beside_a_sweep_groups_by_setting_not_by_seed(tmp_path):
  _ensemble_and_sweep(tmp_path)
  runs = analysis.load_runs([tmp_path / "ens", tmp_path / "sw"])
  assert analysis.group_keys(runs) == ["config.num_steps", "config.optimizer.learning_rate"]
  table = analysis.summarize(runs, "eval/accuracy")
  assert sorted(table["n"]) == [2, 2, 4]
  ensemble = table[table["config.num_steps"] == 40].iloc[0]
  assert ensemble["seeds"] == (0, 1, 2, 3)
  assert ensemble["group"] == "num_steps=40, optimizer.learning_rate=0.05"


# Each differs per member or per sweep, or changes how a run is run, logged or saved, never
# what it trains: runs that differ only in it are one setting.
BOOKKEEPING = [
    {"name": "other"}, {"num_seeds": 16}, {"data_seed": 7}, {"progress_bar": True},
    {"steps_per_call": 5}, {"log_every_steps": 5}, {"eval_every_steps": 40},
    {"eval_batch_size": 100}, {"probe_size": 64},
    {"diagnostics.weight_stats.every_steps": 10}, {"wandb.name": "run-7"},
    {"wandb.project": "mine"}, {"wandb.tags": ["a"]}, {"compile_cache.dir": ""},
    {"checkpoint.every_steps": 0}, {"checkpoint.max_to_keep": 1}, {"mesh.members": 2},
    {"mesh.data": 1}, {"distributed.enabled": "no"}, {"data.workers": 2},
    {"data.prefetch": 4}, {"data.on_device": "no"}, {"data.max_device_bytes": 1},
]


@pytest.mark.parametrize("keys", BOOKKEEPING, ids=lambda k: next(iter(k)))
def test_bookkeeping_never_splits_a_setting(tmp_path, keys):
  _ensemble(tmp_path / "a", _config(f"{MLP}:smoke"), {0: 0.80, 1: 0.82})
  _ensemble(tmp_path / "b", _config(f"{MLP}:smoke", **keys), {2: 0.81, 3: 0.83})
  runs = analysis.load_runs(tmp_path)
  assert analysis.group_keys(runs) == []
  assert list(analysis.summarize(runs, "eval/accuracy")["n"]) == [4]


def test_a_setting_key_absent_from_some_runs_still_groups_them(tmp_path):
  # A number that only some runs' configs have (a component's option) reads NaN in the others;
  # those others are still one group, not one group per run.
  _ensemble(tmp_path / "a", _config(f"{MLP}:smoke"), {0: 0.80, 1: 0.82, 2: 0.81})
  _ensemble(tmp_path / "b", _config(f"{MLP}:smoke", **{"loss.temperature": 2.0}),
            {3: 0.9, 4: 0.91})
  table = analysis.summarize(analysis.load_runs(tmp_path), "eval/accuracy")
  assert sorted(table["n"]) == [2, 3]
  assert set(table["group"]) == {"loss.temperature=None", "loss.temperature=2"}


def _two_datasets(root) -> None:
  """The MLP on digits and on moons, each at two learning rates, three seeds each."""
  rng = np.random.default_rng(0)
  for variant, data, centre in (("smoke", "digits", 0.85), ("smoke,moons", "moons", 0.97)):
    _sweep(root / data, data, [
        (_point(f"{MLP}:{variant}", **{"optimizer.learning_rate": lr}),
         dict(enumerate(rng.normal(centre - 0.02 * i, 0.005, 3).tolist())))
        for i, lr in enumerate((0.05, 0.1))])


def test_runs_on_other_datasets_are_split_and_never_compared(tmp_path):
  _two_datasets(tmp_path)
  runs = analysis.load_runs(tmp_path)
  # Pooling by the learning rate alone would average digits with moons: the dataset splits too.
  table = analysis.summarize(runs, "eval/accuracy", by="lr")
  assert table.attrs["cohort_keys"] == ["config.data.name"]
  assert list(table["n"]) == [3, 3, 3, 3]
  assert set(table["group"]) == {f"data.name={d}, optimizer.learning_rate={lr}"
                                 for d in ("digits", "moons") for lr in (0.05, 0.1)}
  with pytest.raises(ValueError, match=r"different datasets \(data.name: digits in a; moons in b"):
    analysis.compare(runs, "eval/accuracy", {"data.name": "digits"}, {"data.name": "moons"})
  with pytest.raises(ValueError, match="data.name: digits, moons in a"):
    analysis.compare(runs, "eval/accuracy", {"lr": 0.05}, {"lr": 0.1})
  with pytest.raises(ValueError, match="different datasets or losses"):
    analysis.compare_groups(runs, "eval/accuracy")
  # Against a chosen baseline, only the groups of its dataset are compared; the others say why.
  within = analysis.compare_groups(runs, "eval/accuracy", {"data.name": "digits", "lr": 0.05})
  assert len(within) == 1
  assert "data.name=digits" in within["group"][0] and "learning_rate=0.1" in within["group"][0]
  assert all("another of the datasets" in why for why in within.attrs["not_compared"].values())
  assert len(within.attrs["not_compared"]) == 2


def test_runs_with_other_losses_are_ranked_apart_in_the_report(tmp_path):
  rng = np.random.default_rng(1)
  for path, name in ((f"{MLP}:smoke", "mlp"), (VAE, "vae")):
    _sweep(tmp_path / name, name, [
        (_point(path, **{"optimizer.learning_rate": lr}),
         dict(enumerate(rng.normal(0.5 + i, 0.01, 3).tolist())))
        for i, lr in enumerate((0.001, 0.01))], metric="eval/loss")
  report = analysis.write_report(tmp_path, metric="eval/loss", out=tmp_path / "report")
  text = report.text
  assert "## Best setting: loss.name=cross_entropy" in text
  assert "## Best setting: loss.name=elbo" in text
  groups = report.groups.set_index("group")
  best = groups.loc[report.best]
  assert sorted(best["config.loss.name"]) == ["cross_entropy", "elbo"]
  assert list(best["config.optimizer.learning_rate"]) == [0.001, 0.001]
  comparisons = pd.read_csv(report.comparisons_csv)
  assert len(comparisons) == 2  # each loss's other rate against its own best, never across
  for _, row in comparisons.iterrows():
    loss = groups.loc[row["baseline"], "config.loss.name"]
    assert groups.loc[row["group"], "config.loss.name"] == loss


def test_compare_says_which_other_swept_values_a_side_pools(tmp_path):
  rng = np.random.default_rng(2)
  _sweep(tmp_path, "vae_lr_beta", [
      (_point(VAE, **{"optimizer.learning_rate": lr, "loss.beta": beta}),
       dict(enumerate(rng.normal(90 + beta, 1.0, 3).tolist())))
      for lr in (0.001, 0.01) for beta in (1.0, 2.0)], metric="eval/nelbo")
  runs = analysis.load_runs(tmp_path)
  c = analysis.compare(runs, "eval/nelbo", {"loss.beta": 1.0}, {"loss.beta": 2.0})
  pooled = [w for w in c.warnings if "pools runs of different settings" in w]
  assert len(pooled) == 2
  assert pooled[0].startswith("loss.beta=1 pools") and pooled[1].startswith("loss.beta=2 pools")
  assert all("optimizer.learning_rate: 0.001 (3 runs), 0.01 (3 runs)" in w for w in pooled)
  assert "optimizer.learning_rate: 0.001 (3 runs), 0.01 (3 runs)" in str(c)
  one = analysis.compare(runs, "eval/nelbo", {"loss.beta": 1.0, "lr": 0.01},
                         {"loss.beta": 2.0, "lr": 0.01})
  assert not any("pools" in w for w in one.warnings)


def test_no_best_is_named_from_groups_of_one(tmp_path, capsys):
  # Three settings of one run each: whichever is highest could be luck.
  _sweep(tmp_path / "ones", "ones", [
      (_point(f"{MLP}:smoke", **{"optimizer.learning_rate": lr}), {0: v})
      for lr, v in ((0.01, 0.80), (0.02, 0.90), (0.05, 0.85))])
  code, out, err = _report([tmp_path / "ones", f"--out={tmp_path / 'r1'}"], capsys)
  assert code == 0, err
  assert "best: none" in out and "nan" not in out
  text = (tmp_path / "r1" / "report.md").read_text()
  assert "No best setting" in text and "one run has no interval" in text
  assert "**optimizer.learning_rate=0.02**" not in text and "nan" not in text.lower()
  runs = analysis.load_runs(tmp_path / "ones")
  assert analysis.best_group(analysis.summarize(runs, "eval/accuracy")) is None
  with pytest.raises(ValueError, match="no group has 2 or more runs"):
    analysis.compare_groups(runs, "eval/accuracy")
  # A group of three beside a better-looking group of one: the best is the group of three.
  _sweep(tmp_path / "mixed", "mixed", [
      (_point(f"{MLP}:smoke", **{"optimizer.learning_rate": 0.01}), {0: 0.80, 1: 0.81, 2: 0.82}),
      (_point(f"{MLP}:smoke", **{"optimizer.learning_rate": 0.02}), {0: 0.95})])
  report = analysis.write_report(tmp_path / "mixed", out=tmp_path / "r2")
  assert report.groups["group"].iloc[0] == "optimizer.learning_rate=0.02"  # sorted by mean
  assert report.best == ["optimizer.learning_rate=0.01"]
  assert "**optimizer.learning_rate=0.01**" in report.text
  assert "1 group(s) of one run are not ranked" in report.text


def test_a_report_on_one_run_says_it_has_no_interval(tmp_path, capsys):
  _write_run(tmp_path / "run", _config(f"{MLP}:smoke"), {"eval/accuracy": 0.84})
  code, out, err = _report([tmp_path / "run", f"--out={tmp_path / 'r'}"], capsys)
  assert code == 0, err
  assert "nan" not in out
  text = (tmp_path / "r" / "report.md").read_text()
  assert "one run has no interval" in text and "none (one run)" in text
  assert "nan" not in text.lower() and "[-, -]" not in text
  groups = pd.read_csv(tmp_path / "r" / "groups.csv")
  assert groups["ci_low"].isna().all() and groups["ci_high"].isna().all()  # the data stay NaN
  c = analysis.compare(None, "eval/accuracy", tmp_path / "run", tmp_path / "run")
  assert "nan" not in str(c) and "no interval (a group of one run has no spread)" in str(c)


def test_report_out_naming_a_file_is_one_clear_error(tmp_path, capsys):
  _ensemble(tmp_path / "ens", _config(f"{MLP}:smoke"), {0: 0.80, 1: 0.82})
  (tmp_path / "afile").write_text("x")
  for out, why in ((tmp_path / "afile", "is a file, not a folder"),
                   (tmp_path / "afile" / "sub", "cannot make the report folder")):
    code, stdout, err = _report([tmp_path / "ens", f"--out={out}"], capsys)
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert why in err and str(out) in err and "--out=DIR" in err
    assert "Errno" not in err
