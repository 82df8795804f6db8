"""Populations: members trained together in one vmapped program, each a complete run folder.

Tolerances: a member trained under vmap is not bitwise the run trained alone (XLA batches the
matmuls differently). On this CPU a 60-step MLP member's train rows came out bitwise those of
the standalone run with its seed and its eval rows within 1.3e-7 relative (the README's
"about 1e-7"); every row is compared at 1e-5 relative (`RTOL`), a margin for other CPUs.
Everything else here is bitwise: a population against itself, a population of one against the
plain run, and a member beside a diverging neighbour against the same member beside a tame
one.
"""

from __future__ import annotations

import csv
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gmf_jax import ConfigError, Preempted, failpoints, load_config
from gmf_jax.sweep import make_sweep, run_sweep, seed_ensemble
from tests.conftest import CONFIGS, run_cli, tree_equal

MLP = str(CONFIGS / "mlp.py")
VAE = str(CONFIGS / "vae.py")
SMOKE = dict(num_steps=60, steps_per_call=20, log_every_steps=10, eval_every_steps=30,
             progress_bar=False)
SMOKE["checkpoint.every_steps"] = 30
RTOL = 1e-5  # a vmapped member against its standalone run, every metric row (see above)


def _rows(folder, prefixes=("train/", "eval/")):
  with open(os.path.join(folder, "metrics.csv")) as f:
    return sorted((r["step"], r["name"], r["value"]) for r in csv.DictReader(f)
                  if r["name"].startswith(prefixes))


def _json(path):
  with open(path) as f:
    return json.load(f)


def _values(folder) -> dict[tuple[int, str], float]:
  """The train/* and eval/* rows of a run folder: (step, name) -> value."""
  return {(int(s), n): float(v) for s, n, v in _rows(folder)}


def _assert_close(got, want, rtol, what):
  assert got.keys() == want.keys(), what
  for key in want:
    assert got[key] == pytest.approx(want[key], rel=rtol, abs=1e-7), (what, key)


def _grid(lrs, seeds=1, **extra):
  return {"config": f"{MLP}:smoke", "method": "grid", "seeds": seeds,
          "parameters": {"optimizer.learning_rate": {"values": list(lrs)}}, **extra}


@pytest.fixture
def disarm():
  yield
  failpoints.arm(None)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
  """Three seeds of the MLP as one population (run once for the module)."""
  root = tmp_path_factory.mktemp("ensemble")
  result = run_sweep(seed_ensemble(f"{MLP}:smoke", 3, SMOKE), str(root / "ens"))
  return root, result


def test_every_member_is_a_complete_run_folder(ensemble):
  root, result = ensemble
  assert result.counts() == {"completed": 3}
  sweep = _json(root / "ens" / "sweep.json")
  assert [m["name"] for m in sweep["members"]] == ["seed=0", "seed=1", "seed=2"]
  assert {m["population"] for m in sweep["members"]} == {"p0"}
  for i, member in enumerate(sweep["members"]):
    folder = root / "ens" / member["folder"]
    assert member["status"] == "completed" and member["seed"] == i
    for name in ("config.json", "metadata.json", "metrics.csv", "summary.json",
                 "population.json"):
      assert (folder / name).exists(), name
    # Figures scale with the population: no member draws its own (gmf_jax.plot draws them).
    assert not (folder / "plots").exists()
    assert _json(folder / "config.json")["seed"] == i
    assert _json(folder / "metadata.json")["status"] == "completed"
    summary = _json(folder / "summary.json")
    assert summary["population"]["size"] == 3 and summary["population"]["index"] == i
    assert "eval/loss" in summary["metrics"]
  # One stacked checkpoint for the population, none in the member folders.
  steps = os.listdir(root / "ens" / "populations" / "p0" / "checkpoints")
  assert "60" in steps and not (root / "ens" / "seed=0" / "checkpoints").exists()


def test_members_differ_and_a_member_matches_its_standalone_run(ensemble, tmp_path):
  root, _ = ensemble
  finals = [_json(root / "ens" / f"seed={i}" / "summary.json")["metrics"]["eval/loss"]["final"]
            for i in range(3)]
  assert len(set(finals)) == 3  # each member has its own keys
  config = load_config(f"{MLP}:smoke", {**SMOKE, "seed": 1})
  from gmf_jax import train_and_evaluate

  train_and_evaluate(config, str(tmp_path / "alone"))
  _assert_close(_values(root / "ens" / "seed=1"), _values(tmp_path / "alone"), RTOL, "seed=1")


def test_a_population_is_bitwise_reproducible(ensemble, tmp_path):
  root, _ = ensemble
  run_sweep(seed_ensemble(f"{MLP}:smoke", 3, SMOKE), str(tmp_path / "again"))
  for i in range(3):
    assert _rows(root / "ens" / f"seed={i}") == _rows(tmp_path / "again" / f"seed={i}")


def test_a_population_of_one_is_bitwise_the_plain_run(ensemble, tmp_path):
  """A population of one takes the plain run's own path (no vmap), so the sweep's member is
  bitwise the plain run: this checks what the sweep gives it (config, seed, keys, folder).
  The vmapped path is checked against the same plain run: member seed=0 of the ensemble."""
  from gmf_jax import train_and_evaluate

  run_sweep(seed_ensemble(f"{MLP}:smoke", 1, SMOKE), str(tmp_path / "one"))
  train_and_evaluate(load_config(f"{MLP}:smoke", SMOKE), str(tmp_path / "plain"))
  assert _rows(tmp_path / "one" / "seed=0") == _rows(tmp_path / "plain")
  root, _ = ensemble
  _assert_close(_values(root / "ens" / "seed=0"), _values(tmp_path / "plain"), RTOL, "vmapped")


# Members that differ in a hyperparameter other than the learning rate share one program (the
# value is data, see gmf_jax/train/hparams.py); each must train with its own value.
OPTION_SWEEPS = {
    "sgd-momentum": (MLP, {}, {"optimizer.momentum": [0.9, 0.5]}),
    "adam-b1-eps": (MLP, {"optimizer.name": "adam"},  # zipped: two members
                    {"optimizer.b1": [0.9, 0.5], "optimizer.eps": [1e-8, 1e-3]}),
    "vae-loss-beta": (VAE, {}, {"loss.beta": [1.0, 4.0]}),
}
SHORT = dict(num_steps=30, steps_per_call=30, log_every_steps=10, eval_every_steps=15,
             progress_bar=False)


@pytest.mark.parametrize("case", list(OPTION_SWEEPS))
def test_members_train_with_their_own_optimizer_and_loss_options(tmp_path, case):
  from gmf_jax import train_and_evaluate

  path, base, values = OPTION_SWEEPS[case]
  overrides = {**SHORT, **base}
  definition = {"config": f"{path}:smoke", "method": "grid",
                "parameters": {k: {"values": v} for k, v in values.items()},
                "zip": [list(values)] if len(values) > 1 else []}
  run_sweep(make_sweep(definition, overrides), str(tmp_path / "sw"))
  members = _json(tmp_path / "sw" / "sweep.json")["members"]
  assert len(members) == len(next(iter(values.values())))
  assert {m["population"] for m in members} == {"p0"}  # one vmapped program
  finals = []
  for i, m in enumerate(members):
    got = _values(tmp_path / "sw" / m["folder"])
    alone = tmp_path / f"alone-{i}"
    train_and_evaluate(load_config(f"{path}:smoke", {**overrides, **m["overrides"]}), str(alone))
    _assert_close(got, _values(alone), RTOL, m["name"])  # as trained alone with its values
    finals.append(got[(30, "eval/loss")])
  assert len(set(finals)) == len(finals), finals  # and not with the first member's


def test_each_member_keeps_its_own_best_checkpoint(tmp_path):
  """At a constant rate of 0.3 the eval loss goes down and back up (best at a middle step); at
  1.0 it jumps up after the first evaluation. The population's best checkpoint holds, for each
  member, its state at its own lowest eval loss."""
  overrides = dict(num_steps=40, steps_per_call=10, log_every_steps=10, eval_every_steps=5,
                   progress_bar=False)
  overrides.update({"schedule.name": "constant", "checkpoint.every_steps": 5,
                    "checkpoint.max_to_keep": 10})
  run_sweep(make_sweep(_grid([0.3, 1.0]), overrides), str(tmp_path / "sw"))
  population = tmp_path / "sw" / "populations" / "p0"
  (saved,) = os.listdir(population / "best_checkpoint")
  restore = lambda kind, step: ocp.StandardCheckpointer().restore(
      str(population / kind / str(step) / "state"))["params"]
  best_params = restore("best_checkpoint", saved)
  bests = []
  for i, name in enumerate(["lr=0.3,seed=0", "lr=1,seed=0"]):
    losses = {int(s): float(v) for s, n, v in _rows(tmp_path / "sw" / name) if n == "eval/loss"}
    best = min(losses, key=losses.get)
    bests.append(best)
    member = lambda tree, i=i: jax.tree_util.tree_map(lambda a: np.asarray(a)[i], tree)
    assert tree_equal(member(best_params), member(restore("checkpoints", best))), (name, best)
  assert bests[0] not in (5, 40) and bests[1] != bests[0], bests  # the members' bests differ
  assert int(saved) == max(bests)  # saved when the last member improved


def test_a_diverging_member_fails_alone_and_leaves_its_neighbour_bitwise(tmp_path):
  run_sweep(make_sweep(_grid([0.05, 0.06]), SMOKE), str(tmp_path / "tame"))
  result = run_sweep(make_sweep(_grid([0.05, 1e6]), SMOKE), str(tmp_path / "wild"))
  assert result.statuses == {"lr=0.05,seed=0": "completed", "lr=1e+06,seed=0": "failed"}
  assert _rows(tmp_path / "tame" / "lr=0.05,seed=0") == _rows(tmp_path / "wild" /
                                                              "lr=0.05,seed=0")
  bad = _json(tmp_path / "wild" / "lr=1e+06,seed=0" / "metadata.json")
  assert bad["status"] == "failed" and "non-finite" in bad["error"] and "at step" in bad["error"]
  # Nothing of it is recorded past the failing step, and its pointer says so.
  failed_at = int(bad["error"].split("at step ")[1].split()[0])
  held = ("no checkpoint was saved before it" if failed_at <= 30  # saved every 30 steps
          else "the last checkpoint, of step 30, holds finite values")
  assert held in bad["error"]
  assert all(int(s) <= failed_at for s, _, _ in _rows(tmp_path / "wild" / "lr=1e+06,seed=0"))
  pointer = _json(tmp_path / "wild" / "lr=1e+06,seed=0" / "population.json")
  assert pointer["failed_at"] == failed_at
  # Its slot kept computing (vmap computes every member); nothing of it was recorded, and no
  # checkpoint from the failing step on counts as one of its own.
  from gmf_jax.runlog.population import population_steps

  assert all(s < failed_at for s in population_steps(str(tmp_path / "wild" /
                                                          "lr=1e+06,seed=0")))


def _hidden_lr():
  return {"config": f"{MLP}:smoke", "method": "grid",
          "parameters": {"model.hidden": {"values": [(16,), (32,)]},
                         "lr": {"values": [0.05, 0.1]}}}


def _hidden_seeds():
  return {"config": f"{MLP}:smoke", "method": "grid",
          "parameters": {"model.hidden": {"values": [(16,), (32,)]}}, "seeds": 2}


def test_members_that_change_the_program_train_in_separate_populations(tmp_path):
  from gmf_jax.sweep.run import plan_sweep

  # max_population splits each program's population (planned only: training it is the same
  # code path as below, one population at a time).
  plan = plan_sweep(make_sweep(_hidden_lr(), SMOKE), str(tmp_path / "sw"), max_population=1)
  assert sorted(len(p.members) for p in plan.populations) == [1, 1, 1, 1]
  assert len({p.id for p in plan.populations}) == 4  # 2 programs, each split in 2
  assert not os.path.exists(tmp_path / "sw")  # planning writes nothing
  grouped = run_sweep(make_sweep(_hidden_lr(), SMOKE), str(tmp_path / "grouped"))
  assert grouped.counts() == {"completed": 4}
  by_hidden = {}
  for m in _json(tmp_path / "grouped" / "sweep.json")["members"]:
    by_hidden.setdefault(m["overrides"]["model.hidden"][0], set()).add(m["population"])
  assert all(len(p) == 1 for p in by_hidden.values()) and len(
      set().union(*by_hidden.values())) == 2


def test_an_interrupted_sweep_resumes_without_touching_completed_members(tmp_path, disarm):
  sweep = make_sweep(_hidden_seeds(), SMOKE)
  workdir = str(tmp_path / "sw")
  failpoints.arm("eval@3=SIGTERM")  # the first population's 2 evals, then the second's first
  with pytest.raises(Preempted):
    run_sweep(sweep, workdir)
  failpoints.arm(None)
  saved = {m["name"]: m["status"] for m in _json(os.path.join(workdir, "sweep.json"))["members"]}
  done = [n for n, s in saved.items() if s == "completed"]
  assert sorted(saved.values()) == ["completed", "completed", "preempted", "preempted"]
  before = {n: open(os.path.join(workdir, n, "metrics.csv"), "rb").read() for n in done}
  result = run_sweep(sweep, workdir)
  assert result.counts() == {"completed": 4}
  for n in done:
    assert open(os.path.join(workdir, n, "metrics.csv"), "rb").read() == before[n]
  reference = run_sweep(make_sweep(_hidden_seeds(), SMOKE), str(tmp_path / "ref"))
  assert reference.counts() == {"completed": 4}
  for name in saved:
    rows = _rows(os.path.join(workdir, name))
    assert len(rows) == len({(s, n) for s, n, _ in rows})  # no duplicated rows
    assert rows == _rows(tmp_path / "ref" / name)  # resumed = never stopped


def test_a_population_stopped_inside_a_log_window_resumes_each_members_window(ensemble, tmp_path,
                                                                              disarm):
  """Stopped at step 25 (log steps are multiples of 10), the population's checkpoint holds
  each member's open averaging window (steps 21..25): the resumed members log what the
  uninterrupted ensemble logged."""
  overrides = {**SMOKE, "checkpoint.every_steps": 25}  # chunks end at 20, 25, 30, 50, 60
  workdir = str(tmp_path / "ens")
  failpoints.arm("checkpoint_save@1=SIGTERM")
  with pytest.raises(Preempted) as info:
    run_sweep(seed_ensemble(f"{MLP}:smoke", 3, overrides), workdir)
  assert info.value.step == 25
  failpoints.arm(None)
  assert run_sweep(seed_ensemble(f"{MLP}:smoke", 3, overrides), workdir).counts() == {
      "completed": 3}
  root, _ = ensemble
  for i in range(3):
    assert _rows(os.path.join(workdir, f"seed={i}")) == _rows(root / "ens" / f"seed={i}"), i


def test_a_changed_definition_is_refused_with_the_difference(tmp_path):
  run_sweep(make_sweep(_grid([0.05]), SMOKE), str(tmp_path / "sw"))
  with pytest.raises(ConfigError, match=r"different definition.*0\.05.*0\.07"):
    run_sweep(make_sweep(_grid([0.05, 0.07]), SMOKE), str(tmp_path / "sw"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(executor="threads"), "--executor='threads' is unknown"),
    (dict(max_population=0), "max_population=0 must be an integer >= 1"),
    (dict(executor="local"), "pass a sweep file"),
])
def test_bad_sweep_run_arguments(tmp_path, kwargs, match):
  with pytest.raises(ConfigError, match=match):
    run_sweep(make_sweep(_grid([0.05]), SMOKE), str(tmp_path / "sw"), **kwargs)
  assert not (tmp_path / "sw" / "sweep.json").exists()


def _sweep_file(tmp_path, seeds=2):
  path = tmp_path / "pair.py"
  path.write_text(
      "def get_sweep():\n"
      f"  return {{'config': {MLP + ':smoke'!r}, 'method': 'grid', 'seeds': {seeds},\n"
      "          'parameters': {'lr': {'values': [0.05, 0.1]}}}\n")
  return str(path)


def _overrides():
  return [f"--config.{k}={v}" for k, v in SMOKE.items()]


def test_local_executor_end_to_end(tmp_path):
  out = run_cli(f"--sweep={_sweep_file(tmp_path, seeds=1)}", f"--workdir={tmp_path / 'sw'}",
                "--executor=local", *_overrides(), cwd=tmp_path, module="gmf_jax.sweep")
  assert out.returncode == 0, out.stderr[-2000:]
  saved = _json(tmp_path / "sw" / "sweep.json")
  assert [m["status"] for m in saved["members"]] == ["completed", "completed"]
  assert saved["executor"] == "local"
  # Same command again: nothing to train, nothing changed.
  before = _rows(tmp_path / "sw" / "lr=0.05,seed=0")
  again = run_cli(f"--sweep={_sweep_file(tmp_path, seeds=1)}", f"--workdir={tmp_path / 'sw'}",
                  "--executor=local", *_overrides(), cwd=tmp_path, module="gmf_jax.sweep")
  assert again.returncode == 0 and _rows(tmp_path / "sw" / "lr=0.05,seed=0") == before


def test_submitit_executor_end_to_end_through_its_local_executor(tmp_path):
  result = run_sweep(_sweep_file(tmp_path, seeds=1), str(tmp_path / "sw"),
                     executor="submitit", overrides=SMOKE,
                     submitit_options={"cluster": "local", "timeout_min": 10})
  assert result.counts() == {"completed": 2}
  assert (tmp_path / "sw" / "submitit").is_dir()


def test_a_member_folder_resumes_and_is_diagnosed_alone(ensemble, tmp_path):
  import shutil

  from gmf_jax import train_and_evaluate
  from gmf_jax.diagnose import diagnose

  root, _ = ensemble
  copy = tmp_path / "copy"
  shutil.copytree(root / "ens", copy)
  member = copy / "seed=2"
  done = diagnose(str(member), ["weight_stats"], steps="all")
  assert sorted(done) == [30, 60]
  config = load_config(f"{MLP}:smoke", {**SMOKE, "seed": 2, "num_steps": 90,
                                        "wandb.group": "mlp"})
  result = train_and_evaluate(config, str(member))  # extends the member alone from step 60
  rows = _rows(member)
  assert max(int(s) for s, _, _ in rows) == 90 and result.workdir == str(member)
  assert len(rows) == len({(s, n) for s, n, _ in rows})
  assert np.isfinite(result.metrics["eval/loss"])


def test_a_population_keeps_each_members_arrays_and_draws_no_member_figure(tmp_path,
                                                                          monkeypatch):
  monkeypatch.setenv("WANDB_MODE", "offline")
  overrides = {**SMOKE, "diagnostics.weight_stats.every_steps": 30}
  result = run_sweep(seed_ensemble(MLP, 4, overrides), str(tmp_path / "ens"))
  assert result.counts() == {"completed": 4}
  for i in range(4):
    folder = tmp_path / "ens" / f"seed={i}"
    summary = _json(folder / "summary.json")
    assert summary["status"] == "completed"
    for step in (30, 60):  # weight_stats every 30 steps, the confusion matrix at the end
      assert (folder / "diagnostics" / "weight_stats" / f"step_{step}.npz").exists()
    assert (folder / "diagnostics" / "confusion_matrix" / "step_60.npz").exists()
    assert "diag/weight_stats/param_norm" in summary["metrics"]
    assert not list(folder.rglob("*.png")) and not list(folder.rglob("*.tmp"))
  # Every member its own wandb run; only the first lists the environment's packages (the
  # others share its process: each listing would cost a member 0.4 s).
  runs = [list((tmp_path / "ens" / f"seed={i}" / "wandb").glob("offline-run-*"))
          for i in range(4)]
  assert [len(r) for r in runs] == [1] * 4 and len({r[0].name for r in runs}) == 4
  assert [(r[0] / "files" / "requirements.txt").exists() for r in runs] == [True] + [False] * 3


def test_num_seeds_trains_a_seed_ensemble_from_python_and_refuses_bad_counts(tmp_path):
  from gmf_jax import run, train_and_evaluate

  config = load_config(f"{MLP}:smoke", {**SMOKE, "num_seeds": 2, "seed": 5})
  with pytest.raises(ConfigError, match="num_seeds=2 makes a seed ensemble.*gmf_jax.run"):
    train_and_evaluate(config, str(tmp_path / "ens"))  # a TrainResult only: it refuses
  assert not (tmp_path / "ens").exists()
  result = run(config, str(tmp_path / "ens"))
  assert result.statuses == {"seed=5": "completed", "seed=6": "completed"}
  saved = _json(tmp_path / "ens" / "seed=6" / "config.json")
  assert saved["seed"] == 6 and saved["num_steps"] == 60 and saved["num_seeds"] == 1
  out = run_cli(f"--config={MLP}:smoke", "--config.num_seeds=0", cwd=tmp_path)
  assert out.returncode == 2 and "num_seeds=0 must be an integer >= 1" in out.stderr


@pytest.mark.parametrize("args, match", [
    (["--executor=threads"], "--executor='threads' is unknown"),
    (["--max_population=0"], "--max_population=0 must be an integer >= 1"),
    (["--max_workers=two"], "--max_workers='two' must be an integer"),
    (["--frobnicate"], "unknown argument '--frobnicate'"),
    (["--config.optimizer.learning_rat=0.1"], "learning_rat"),
])
def test_the_sweep_command_refuses_bad_arguments_before_anything_runs(tmp_path, args, match):
  out = run_cli(f"--sweep={_sweep_file(tmp_path)}", f"--workdir={tmp_path / 'sw'}", *args,
                cwd=tmp_path, module="gmf_jax.sweep")
  assert out.returncode == 2 and match in out.stderr, out.stderr
  assert len(out.stderr.strip().splitlines()) == 1  # one line
  assert not (tmp_path / "sw").exists()


def test_a_script_without_a_main_guard_runs_a_population_once(tmp_path):
  """Nothing a population starts (data readers, the figures at the end) re-runs the script that
  started it (multiprocessing's spawn would, and here it would start the sweep again)."""
  script = tmp_path / "train.py"
  script.write_text(
      "from gmf_jax import load_config\n"
      "from gmf_jax.sweep.run import run_seed_ensemble\n"
      f"config = load_config({MLP + ':smoke'!r}, {{'num_seeds': 4, 'progress_bar': False}})\n"
      f"result = run_seed_ensemble(config, {str(tmp_path / 'ens')!r})\n"
      "print('STATUSES', sorted(result.statuses.values()))\n")
  import subprocess
  import sys

  out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.count("STATUSES") == 1 and "['completed', 'completed', 'completed', " \
      "'completed']" in out.stdout
  for i in range(4):
    assert (tmp_path / "ens" / f"seed={i}" / "metrics.csv").exists()
