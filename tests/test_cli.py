"""The real command line, in a fresh process: a smoke run, and bad input failing cleanly."""

import csv
import json
import os

import pytest

from tests.conftest import CONFIGS, run_cli

VAE = str(CONFIGS / "vae.py")


def test_cli_trains_and_writes_the_run(tmp_path):
  proc = run_cli(f"--config={VAE}:smoke", "--config.optimizer.learning_rate=3e-4",
                 "--config.seed", "3", cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  (run,) = os.listdir(tmp_path / "runs")
  assert run.startswith("vae-")
  workdir = tmp_path / "runs" / run
  assert f"run directory: {workdir}" in proc.stdout
  assert "learning_rate=0.0003" in proc.stdout  # the resolved config is printed
  assert "test-set negative ELBO" in proc.stdout
  config = json.loads((workdir / "config.json").read_text())
  assert config["optimizer"]["learning_rate"] == 3e-4 and config["seed"] == 3
  with open(workdir / "metrics.csv") as f:
    rows = list(csv.DictReader(f))
  assert set(rows[0]) == {"step", "name", "value", "wall_time"}
  names = {r["name"] for r in rows}
  assert {"train/loss", "train/nelbo", "train/learning_rate", "eval/nelbo"} <= names
  assert sorted({int(r["step"]) for r in rows if r["name"] == "train/loss"}) == [10, 20, 30, 40]
  assert sorted({int(r["step"]) for r in rows if r["name"] == "eval/nelbo"}) == [20, 40]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "completed"
  final_nelbo = [float(r["value"]) for r in rows if r["name"] == "eval/nelbo"][-1]
  assert summary["metrics"]["eval/nelbo"]["final"] == final_nelbo
  assert summary["metrics"]["eval/nelbo"]["best"] <= final_nelbo


def test_cli_workdir_flag(tmp_path):
  proc = run_cli(f"--config={CONFIGS / 'mlp.py'}:smoke", f"--workdir={tmp_path / 'mine'}",
                 cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert (tmp_path / "mine" / "metrics.csv").exists()
  assert not (tmp_path / "runs").exists()


BAD_INPUTS = [
    (["--config.optimizer.lerning_rate=1"], "optimizer.lerning_rate"),
    (["--config.batch_size=abc"], "batch_size='abc'"),
    (["--config.model.name=transformer"], "model.name='transformer' is unknown"),
    (["--config.data.name=imagenet"], "data.name='imagenet' is unknown"),
    (["--config.optimizer.name=adamm"], "Did you mean 'adam'"),
    (["--config.schedule.name=cosin"], "schedule.name='cosin'"),
    (["--config.batch_size=5000"], "batch_size=5000 is larger than the training set"),
    (["--config.optimizer.momentum=0.9"], "optimizer.momentum=0.9 has no effect"),
    (["--config.model.latent_dims=3"], "model.latent_dims"),
    (["--config.model.activation=relu6"], "model.activation='relu6' must be one of"),
    (["--config.loss.name=reconstruction", "--config.loss.beta=2"],
     "loss.beta=2.0 has no effect with loss.name='reconstruction'"),
    (["--config.model.name=autoencoder"], "loss.name='elbo' expects __call__"),
    (["--config.data.name=tfds:mnist", "--config.batch_size=8"], "tfds build mnist"),
    (["--config.compile_cache.dir=/dev/null/cache"], "compile_cache.dir='/dev/null/cache'"),
    (["--config.compile_cache.max_size_mb=0"], "compile_cache.max_size_mb=0 must be"),
    (["--bogus"], "unknown argument '--bogus'"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[a[0] for a, _ in BAD_INPUTS])
def test_bad_input_fails_cleanly_and_writes_nothing(tmp_path, args, message):
  proc = run_cli(f"--config={VAE}:smoke", *args, cwd=tmp_path,
                 env={"TFDS_DATA_DIR": str(tmp_path / "no_tfds")})
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  assert message in lines[0]
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "runs").exists()


def test_missing_config_file_fails_cleanly(tmp_path):
  proc = run_cli("--config=configs/nope.py", cwd=tmp_path)
  assert proc.returncode == 2
  assert proc.stderr.strip() == (
      "error: config file 'configs/nope.py' does not exist (cwd: " f"{tmp_path})."
  )
  assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name, text", [
    ("metrics.csv", "step,name,value,wall_time\n1,train/loss,0.5,0\n"),  # a run's, no config
    ("thesis.txt", "chapter 1\n"),  # a user's folder
])
def test_a_folder_that_is_not_a_run_is_refused_untouched(tmp_path, name, text):
  workdir = tmp_path / "old"
  workdir.mkdir()
  (workdir / name).write_text(text)
  proc = run_cli(f"--config={VAE}:smoke", f"--workdir={workdir}", cwd=tmp_path)
  assert proc.returncode == 2, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], proc.stderr
  assert "holds no gmf_jax run" in lines[0] and "Nothing was changed" in lines[0]
  assert (workdir / name).read_text() == text
  assert sorted(os.listdir(workdir)) == [name]
