"""The run record: folder contents, checkpoints, wandb, resume, preemption and faults.

Everything here is real: orbax writes the checkpoints, wandb runs offline, the CLI runs in its
own process and receives real signals.
"""

import csv
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import gmf_jax
from gmf_jax import ConfigError, NonFiniteError
from gmf_jax.runlog.checkpoint import Checkpointer
from gmf_jax.runlog.wandb_reader import find_offline_runs, read_offline_run
from gmf_jax.train.build import build_experiment, init_state
from gmf_jax.train.step import make_keys
from tests.conftest import CONFIGS, run_cli, tree_equal

VAE = str(CONFIGS / "vae.py")
# A short run with checkpoints every 20 steps and a constant learning rate.
SHORT = ["--config.num_steps=120", "--config.steps_per_call=10", "--config.eval_every_steps=40",
         "--config.checkpoint.every_steps=20", "--config.schedule.name=constant",
         "--config.schedule.warmup_steps=0", "--config.schedule.end_value=0.0"]


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
    return [(r["step"], r["name"], r["value"]) for r in csv.DictReader(f)]


def _final_params(workdir):
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  path = os.path.join(workdir, "checkpoints", str(steps[-1]), "state")
  return steps[-1], ocp.StandardCheckpointer().restore(path)["params"]


def _json(path):
  with open(path) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  """The uninterrupted run that interrupted ones must reproduce bitwise (run in this process:
  the interrupted runs are the command line's, and this process's)."""
  cwd = tmp_path_factory.mktemp("reference")
  _python_run(cwd, "ref")
  return str(cwd / "ref")


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
  """A smoke run from the command line, wandb offline, a checkpoint every 20 steps: the run
  folder whose contents and wandb run the next two tests read."""
  cwd = tmp_path_factory.mktemp("offline")
  proc = run_cli(f"--config={VAE}:smoke", "--config.checkpoint.every_steps=20", "--workdir=run",
                 cwd=cwd, env={"WANDB_MODE": "offline"})
  assert proc.returncode == 0, proc.stderr
  return cwd / "run"


def test_run_folder_contents(offline_run):
  run = offline_run
  assert {"config.json", "config.py", "metadata.json", "metrics.csv", "summary.json",
          "checkpoints", "best_checkpoint", "plots", "wandb"} <= set(os.listdir(run))
  assert (run / "config.py").read_text() == (CONFIGS / "vae.py").read_text()
  meta = _json(run / "metadata.json")
  assert meta["status"] == "completed" and meta["seed"] == 0
  assert meta["start_time"] <= meta["end_time"]
  assert meta["command"][1:3] == ["-m", "gmf_jax.main"]
  assert "--config.checkpoint.every_steps=20" in meta["command"]
  assert meta["config_file"] == str(CONFIGS / "vae.py") and meta["config_variant"] == "smoke"
  for package in ("python", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
                  "gmf_jax"):
    assert meta["versions"][package], package
  assert meta["versions"]["jax"] == jax.__version__
  assert meta["devices"]["platform"] == "cpu" and meta["host"]["hostname"]
  assert "commit" in meta["git"] and "dirty" in meta["git"]
  if meta["git"]["dirty"]:
    assert (run / "git.diff").stat().st_size > 0
  assert sorted(os.listdir(run / "checkpoints")) == ["20", "40"]
  assert len(os.listdir(run / "best_checkpoint")) == 1
  assert {"loss.png", "metrics.png"} <= set(os.listdir(run / "plots"))
  assert (run / "plots" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wandb_offline_run_holds_config_and_metrics(offline_run):
  run_dir = offline_run
  (path,) = find_offline_runs(str(run_dir / "wandb"))
  wandb_run = read_offline_run(path)
  meta = _json(run_dir / "metadata.json")
  assert wandb_run.run_id == meta["wandb_run_id"]
  config = _json(run_dir / "config.json")
  assert wandb_run.config["optimizer"] == config["optimizer"]
  assert wandb_run.config["model"]["name"] == "mlp_vae"
  assert wandb_run.exit_code == 0
  logged = {(row["_step"], k): v for row in wandb_run.history for k, v in row.items()
            if k.startswith(("train/", "eval/"))}
  in_csv = {(int(s), n): float(v) for s, n, v in _rows(run_dir)}
  assert logged == in_csv
  images = [v for row in wandb_run.history for k, v in row.items() if k.startswith("plots/")]
  assert images and all(v["_type"] == "image-file" for v in images)  # the loss curves
  summary = _json(run_dir / "summary.json")  # the run timed its own recording
  assert set(summary["record_sec"]) == {"run_folder", "metrics", "checkpoints", "plots",
                                        "wandb_finish"}
  assert 0 < sum(summary["record_sec"].values()) < summary["run_sec"]
  background = summary["record_background_cpu_sec"]
  assert background["wandb"] > 0  # this run's thread, which hands rows to the wandb process
  assert background["wandb_process"] > background["wandb"]  # where wandb itself runs


def test_checkpoint_restores_the_same_pytree_types(tmp_path):
  config = gmf_jax.load_config(VAE + ":smoke")
  exp = build_experiment(config)
  state = init_state(exp, make_keys(0))
  checkpointer = Checkpointer(str(tmp_path), max_to_keep=2)
  checkpointer.save(7, state, {"window": {"loss": [1.5]}})
  checkpointer.wait()
  step, restored, meta = checkpointer.restore_latest(like=state)
  checkpointer.close()
  assert step == 7 and meta == {"window": {"loss": [1.5]}}
  assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(state)
  assert type(restored.opt_state[0]) is type(state.opt_state[0])
  assert tree_equal(restored.params, state.params)


def _wait_for_rows(workdir, min_step, proc, timeout=120):
  deadline = time.time() + timeout
  path = os.path.join(workdir, "metrics.csv")
  while time.time() < deadline:
    assert proc.poll() is None, proc.communicate()
    if os.path.exists(path) and any(int(s) >= min_step for s, _, _ in _rows(workdir)[:-1]):
      return
    time.sleep(0.02)
  raise TimeoutError(path)


def _start(cwd, *args, env=None):
  return subprocess.Popen(
      [sys.executable, "-m", "gmf_jax.main", f"--config={VAE}:smoke", *SHORT, *args],
      cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env={**os.environ, **(env or {})},
  )


def test_kill_9_then_resume_equals_uninterrupted(tmp_path, reference_run):
  # At a random moment (the seed is in the message); tests/test_status.py kills at named ones.
  seed = random.randrange(10**6)
  rng = random.Random(seed)
  proc = _start(tmp_path, "--workdir=run")
  _wait_for_rows(tmp_path / "run", rng.randrange(10, 60), proc)
  time.sleep(rng.uniform(0.0, 0.3))
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  resumed = run_cli(f"--config={VAE}:smoke", *SHORT, "--workdir=run", cwd=tmp_path)
  assert resumed.returncode == 0, (seed, resumed.stderr)
  step, params = _final_params(tmp_path / "run")
  ref_step, ref_params = _final_params(reference_run)
  assert step == ref_step == 120
  assert tree_equal(params, ref_params), seed
  assert _rows(tmp_path / "run") == _rows(reference_run), seed


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_then_resume_equals_uninterrupted(tmp_path, reference_run, sig):
  offline = {"WANDB_MODE": "offline"}
  proc = _start(tmp_path, "--workdir=run", env=offline)
  _wait_for_rows(tmp_path / "run", 30, proc)
  proc.send_signal(sig)
  _, stderr = proc.communicate(timeout=120)
  assert proc.returncode == 128 + sig, stderr
  assert f"preempted: stopped by {sig.name} at step" in stderr
  meta = _json(tmp_path / "run" / "metadata.json")
  assert meta["status"] == "preempted"
  stopped_at = int(stderr.split("at step ")[1].split(";")[0])
  assert str(stopped_at) in os.listdir(tmp_path / "run" / "checkpoints")
  assert max(int(s) for s, _, _ in _rows(tmp_path / "run")) == stopped_at
  resumed = run_cli(f"--config={VAE}:smoke", *SHORT, "--workdir=run", cwd=tmp_path, env=offline)
  assert resumed.returncode == 0, resumed.stderr
  assert f"resuming from the checkpoint at step {stopped_at}" in resumed.stdout
  assert tree_equal(_final_params(tmp_path / "run")[1], _final_params(reference_run)[1])
  assert _rows(tmp_path / "run") == _rows(reference_run)
  meta = _json(tmp_path / "run" / "metadata.json")
  assert meta["status"] == "completed"
  assert [s["status"] for s in meta["sessions"]] == ["preempted", "completed"]
  # The resumed session continues the same wandb run.
  runs = [read_offline_run(p) for p in find_offline_runs(str(tmp_path / "run" / "wandb"))]
  assert len(runs) == 2 and {r.run_id for r in runs} == {meta["wandb_run_id"]}
  steps = [row["_step"] for r in runs for row in r.history if "train/loss" in row]
  assert max(steps) == 120


def _python_run(tmp_path, name, **overrides):
  base = {"num_steps": 120, "steps_per_call": 10, "eval_every_steps": 40,
          "checkpoint.every_steps": 20, "schedule.name": "constant", "schedule.warmup_steps": 0,
          "schedule.end_value": 0.0}
  config = gmf_jax.load_config(VAE + ":smoke", {**base, **overrides})
  return gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / name))


def _copy(run, tmp_path):
  """A copy of the run folder `run` as `tmp_path/run`, for a test to resume or rerun."""
  shutil.copytree(run, tmp_path / "run")
  return tmp_path / "run"


@pytest.fixture(scope="module")
def stopped_at_80(tmp_path_factory):
  """The reference's config run in this process to step 80 only (evaluated in the reference run
  too; checkpoints of steps 40, 60 and 80 kept): each test below extends its own copy."""
  root = tmp_path_factory.mktemp("stopped_at_80")
  _python_run(root, "run", num_steps=80)
  return root / "run"


@pytest.fixture(scope="module")
def completed_40(tmp_path_factory):
  """A run of 40 steps, completed: each test below reruns its own copy."""
  root = tmp_path_factory.mktemp("completed_40")
  _python_run(root, "run", num_steps=40)
  return root / "run"


# A constant learning rate this high makes the MLP's eval loss go down and back up: the
# best evaluation (a loss: the lowest) is neither the first nor the last. A checkpoint at
# every evaluation, all kept, to compare the best one with.
RISING = {"num_steps": 40, "steps_per_call": 10, "eval_every_steps": 5,
          "optimizer.learning_rate": 0.3, "schedule.name": "constant",
          "checkpoint.every_steps": 5, "checkpoint.max_to_keep": 10}


def _params(checkpoint_dir, step):
  return ocp.StandardCheckpointer().restore(os.path.join(checkpoint_dir, str(step), "state"))[
      "params"]


def test_best_checkpoint_holds_the_lowest_eval_loss(tmp_path):
  config = gmf_jax.load_config(str(CONFIGS / "mlp.py") + ":smoke", RISING)
  gmf_jax.train_and_evaluate(config, str(tmp_path / "run"))
  run = tmp_path / "run"
  losses = {int(s): float(v) for s, n, v in _rows(run) if n == "eval/loss"}
  best, steps = min(losses, key=losses.get), sorted(losses)
  assert best not in (steps[0], steps[-1]), losses  # neither the first nor the last
  assert os.listdir(run / "best_checkpoint") == [str(best)]
  assert tree_equal(_params(run / "best_checkpoint", best), _params(run / "checkpoints", best))
  assert _json(run / "summary.json")["metrics"]["eval/loss"]["best_step"] == best


def test_nan_stops_cleanly_with_the_checkpoint_intact(tmp_path):
  # The learning rate jumps by 1e30 at step 40: the run diverges right after.
  overrides = {"schedule.name": "step", "schedule.boundaries": (40,), "schedule.decay_rate": 1e30}
  with pytest.raises(NonFiniteError, match=r"non-finite .* at step (4[1-9]|[5-9]\d) .*; the "
                     r"last checkpoint, of step 40, holds finite values\."):
    _python_run(tmp_path, "nan", **overrides)
  run = tmp_path / "nan"
  meta = _json(run / "metadata.json")
  assert meta["status"] == "failed" and "NonFiniteError" in meta["error"]
  step, params = _final_params(run)
  assert step == 40
  assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(params))


def test_skip_nonfinite_updates(tmp_path):
  overrides = {"schedule.name": "step", "schedule.boundaries": (40,),
               "schedule.decay_rate": 1e30, "on_nonfinite": "skip",
               "max_consecutive_nonfinite": 5, "log_every_steps": 1}
  with pytest.raises(NonFiniteError, match="in a row"):
    _python_run(tmp_path, "skip", **overrides)
  skipped = [float(v) for s, n, v in _rows(tmp_path / "skip") if n == "train/skipped"]
  assert skipped[0] == 0.0 and max(skipped) > 0.0


def test_corrupt_latest_checkpoint_falls_back(tmp_path, reference_run, stopped_at_80, caplog):
  run = _copy(stopped_at_80, tmp_path)
  assert sorted(os.listdir(run / "checkpoints")) == ["40", "60", "80"]
  state_dir = run / "checkpoints" / "80" / "state"
  for root, _, files in os.walk(state_dir):  # truncate every array file of the latest step
    for name in files:
      if not name.endswith(".json") and "metadata" not in name:
        with open(os.path.join(root, name), "r+b") as f:
          f.truncate(3)
  logger = logging.getLogger("gmf_jax")  # it does not propagate to the root logger
  logger.addHandler(caplog.handler)
  try:
    _python_run(tmp_path, "run")  # extended to 120: resumes from 60, not the broken 80
  finally:
    logger.removeHandler(caplog.handler)
  assert "checkpoint at step 80 cannot be restored" in caplog.text
  assert "resuming from the checkpoint at step 60" in caplog.text
  assert tree_equal(_final_params(tmp_path / "run")[1], _final_params(reference_run)[1])
  assert _rows(tmp_path / "run") == _rows(reference_run)


def test_unfinished_save_is_ignored(tmp_path, reference_run, stopped_at_80):
  ckpts = _copy(stopped_at_80, tmp_path) / "checkpoints"
  # What a process killed mid-save leaves: orbax's temporary folder for the next step.
  os.makedirs(ckpts / "100.orbax-checkpoint-tmp-1234" / "state")
  (ckpts / "100.orbax-checkpoint-tmp-1234" / "state" / "partial").write_bytes(b"\0" * 10)
  _python_run(tmp_path, "run")
  assert tree_equal(_final_params(tmp_path / "run")[1], _final_params(reference_run)[1])
  assert _rows(tmp_path / "run") == _rows(reference_run)


def test_changed_config_on_resume_is_refused(tmp_path, completed_40):
  _copy(completed_40, tmp_path)
  before = {p: (tmp_path / "run" / p).read_bytes() for p in ("metrics.csv", "metadata.json")}
  proc = run_cli(f"--config={VAE}:smoke", *SHORT, "--config.loss.beta=4", "--workdir=run",
                 cwd=tmp_path)
  assert proc.returncode == 2
  assert "different config" in proc.stderr and "loss.beta: 1.0 -> 4.0" in proc.stderr
  assert {p: (tmp_path / "run" / p).read_bytes() for p in before} == before


def test_completed_run_is_not_retrained(tmp_path, completed_40):
  _copy(completed_40, tmp_path)
  rows = _rows(tmp_path / "run")
  result = _python_run(tmp_path, "run", num_steps=40)
  assert int(result.state.step) == 40
  assert _rows(tmp_path / "run") == rows
  proc = run_cli(f"--config={VAE}:smoke", *SHORT, "--config.num_steps=40", "--workdir=run",
                 cwd=tmp_path)
  assert proc.returncode == 0 and "run already completed at step 40" in proc.stdout


def test_unwritable_workdir_fails_before_training(tmp_path):
  (tmp_path / "a_file").write_text("x")
  config = gmf_jax.load_config(VAE + ":smoke")
  with pytest.raises(ConfigError, match="not writable"):
    gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / "a_file" / "run"))
  with pytest.raises(ConfigError, match="is a file"):
    gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / "a_file"))
  assert (tmp_path / "a_file").read_text() == "x"


def test_bad_checkpoint_and_wandb_settings(tmp_path, monkeypatch):
  with pytest.raises(ConfigError, match=r"checkpoint.best_metric='eval/acc'.*eval/nelbo"):
    _python_run(tmp_path, "a", **{"checkpoint.best_metric": "eval/acc"})
  monkeypatch.setenv("WANDB_MODE", "sometimes")
  with pytest.raises(ConfigError, match="WANDB_MODE='sometimes'"):
    _python_run(tmp_path, "b")
  assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_unreachable_wandb_server_falls_back_to_offline(tmp_path):
  env = {"WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9",
         "WANDB_API_KEY": "0" * 40}
  proc = run_cli(f"--config={VAE}:smoke", "--config.wandb.init_timeout=3", "--workdir=run",
                 cwd=tmp_path, env=env)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.count("wandb could not start online") == 1
  paths = find_offline_runs(str(tmp_path / "run" / "wandb"))
  (path,) = [p for p in paths if "offline-run-" in p]  # beside it: the failed online attempt
  wandb_run = read_offline_run(path)
  assert wandb_run.run_id == _json(tmp_path / "run" / "metadata.json")["wandb_run_id"]
  assert any("train/loss" in row for row in wandb_run.history)


def test_resume_may_change_what_does_not_change_the_result(tmp_path, reference_run,
                                                           stopped_at_80):
  _copy(stopped_at_80, tmp_path)
  # steps_per_call is bitwise neutral; the cache only holds compiled programs.
  _python_run(tmp_path, "run", steps_per_call=7, **{"compile_cache.max_size_mb": 1024})
  assert tree_equal(_final_params(tmp_path / "run")[1], _final_params(reference_run)[1])
  assert _rows(tmp_path / "run") == _rows(reference_run)


def test_resume_on_another_machine_with_the_data_elsewhere(tmp_path, tiny_tfds_dir):
  def run(data_dir, num_steps):
    config = gmf_jax.load_config(
        str(CONFIGS / "mlp.py") + ":smoke",
        {"data.name": "tfds:gmf_tiny_digits", "batch_size": 16, "num_steps": num_steps,
         "checkpoint.every_steps": 20})
    config.unlock()
    config.data.data_dir = str(data_dir)
    config.lock()
    return gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / "run"))

  run(tiny_tfds_dir, 20)
  moved = tmp_path / "elsewhere"
  shutil.copytree(tiny_tfds_dir, moved)  # a requeued job's node mounts the data elsewhere
  result = run(moved, 40)
  assert int(result.state.step) == 40
  assert _json(tmp_path / "run" / "config.json")["data"]["data_dir"] == str(moved)


def test_an_extended_run_trains_on_with_the_new_schedule(tmp_path):
  # A cosine schedule decays to 0 at num_steps: extended from 40 to 80 steps, the run must
  # train on with the schedule of 80 steps, not the checkpoint's (whose rate is 0 after 40).
  def run(num_steps):
    config = gmf_jax.load_config(str(CONFIGS / "mlp.py") + ":smoke", {
        "num_steps": num_steps, "schedule.name": "cosine", "eval_every_steps": 40})
    return gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / "run"))

  first = run(40)
  extended = run(80)
  assert not tree_equal(first.state.params, extended.state.params)
  assert float(np.asarray(extended.state.hparams["schedule.decay_steps"]).reshape(-1)[0]) == 80


def test_a_checkpoint_from_before_model_state_restores_into_todays_state(tmp_path):
  """Checkpoints written before `TrainState` gained `model_state`, `ema` and `loss_scale` (runs
  of an older gmf_jax) resume: fields they lack and this run leaves empty are kept empty."""
  from flax import struct

  class OlderState(struct.PyTreeNode):  # the train state's fields before model state
    step: Any
    params: Any
    opt_state: Any
    hparams: Any

  exp = build_experiment(gmf_jax.load_config(VAE + ":smoke"))
  state = init_state(exp, make_keys(0))
  older = OlderState(state.step, state.params, state.opt_state, state.hparams)
  checkpointer = Checkpointer(str(tmp_path), max_to_keep=2)
  checkpointer.save(5, older, {"window": {}})
  checkpointer.wait()
  step, restored, _ = checkpointer.restore_latest(like=state)
  checkpointer.close()
  assert step == 5 and restored.model_state == {} and restored.ema == {}
  assert tree_equal(restored.params, state.params) and tree_equal(restored.opt_state,
                                                                  state.opt_state)
  assert os.listdir(tmp_path / "checkpoints") == ["5"]  # not set aside as unreadable
