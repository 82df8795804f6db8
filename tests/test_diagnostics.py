"""Diagnostics end to end: scheduling, outputs (npz, PNG, metrics, wandb), requirements,
user diagnostics, and the backfill command."""

import csv
import json
import os
import shutil
import textwrap

import numpy as np
import pytest

import gmf_jax
from gmf_jax import ConfigError
from gmf_jax.diagnostics.schedule import make_schedule
from gmf_jax.runlog.wandb_reader import find_offline_runs, read_offline_run
from tests.conftest import CONFIGS, run_cli

VAE_DIAGNOSTICS = ("reconstructions", "samples", "latent_space", "latent_traversal", "jacobian",
                   "hessian", "weight_stats", "activation_stats")


def _config(path, entries, **overrides):
  config = gmf_jax.load_config(str(CONFIGS / path) + ":smoke", overrides)
  with config.diagnostics.unlocked():
    for name, entry in entries.items():
      config.diagnostics[name] = entry
  return config


def _diag_rows(workdir):
  with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
    return sorted((r["step"], r["name"], r["value"]) for r in csv.DictReader(f)
                  if r["name"].startswith("diag/"))


def test_schedules():
  assert make_schedule("every", 100, every_steps=30).steps == {30, 60, 90, 100}
  assert make_schedule("end", 100).steps == {100}
  log_steps = sorted(make_schedule("log", 1000, num_points=6).steps)
  assert log_steps[0] == 1 and log_steps[-1] == 1000
  gaps = np.diff(log_steps)
  assert np.all(gaps[1:] >= gaps[:-1])  # denser early in training
  with pytest.raises(ConfigError, match="schedule='weekly'"):
    make_schedule("weekly", 100)


def test_every_vae_diagnostic_end_to_end_and_backfill(tmp_path, monkeypatch):
  monkeypatch.setenv("WANDB_MODE", "offline")
  entries = {name: {"every_steps": 20} for name in VAE_DIAGNOSTICS}
  entries["hessian"] = {"schedule": "log", "num_points": 3, "num_iters": 10}
  config = _config("vae.py", entries, **{"checkpoint.every_steps": 20})
  run = str(tmp_path / "run")
  gmf_jax.train_and_evaluate(config, workdir=run)

  for name in VAE_DIAGNOSTICS:
    if name == "hessian":
      continue
    files = set(os.listdir(os.path.join(run, "diagnostics", name)))
    assert {"step_20.npz", "step_40.npz"} <= files, name
  assert {"step_1.npz", "step_6.npz"} <= set(os.listdir(os.path.join(run, "diagnostics",
                                                                      "hessian")))
  for name, fig in [("reconstructions", "grid"), ("samples", "grid"), ("latent_space", "scatter"),
                    ("latent_traversal", "grid"), ("jacobian", "spectrum")]:
    png = os.path.join(run, "diagnostics", name, f"step_40_{fig}.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n", png
  recon = np.load(os.path.join(run, "diagnostics", "reconstructions", "step_40.npz"))
  assert recon["reconstructions"].shape == recon["inputs"].shape == (16, 8, 8, 1)
  jac = np.load(os.path.join(run, "diagnostics", "jacobian", "step_40.npz"))
  assert jac["singular_values"].shape == (64, 8)  # decoder z (8) -> x (64): 8 singular values
  np.testing.assert_allclose(jac["spectral_norm"], jac["singular_values"][:, 0], rtol=1e-5)

  rows = _diag_rows(run)
  names = {n for _, n, _ in rows}
  assert {"diag/jacobian/mean_spectral_norm", "diag/hessian/eigenvalue_1", "diag/hessian/trace",
          "diag/reconstructions/mse", "diag/latent_space/active_dims",
          "diag/weight_stats/update_ratio", "diag/activation_stats/mean_dead_fraction"} <= names
  hessian_steps = sorted({int(s) for s, n, _ in rows if n == "diag/hessian/eigenvalue_1"})
  assert hessian_steps == [1, 6, 40]  # log-spaced: chunks ended there to see those states

  (path,) = find_offline_runs(os.path.join(run, "wandb"))
  history = read_offline_run(path).history
  logged = {k for row in history for k in row}
  assert "diag/jacobian/mean_spectral_norm" in logged
  images = [row[k] for row in history for k in row if k == "diag/samples/grid"]
  assert images and images[0]["_type"] == "image-file"

  # Backfill on a copy without diagnostics gives the same files and rows from the checkpoints.
  copy = str(tmp_path / "copy")
  shutil.copytree(run, copy)
  shutil.rmtree(os.path.join(copy, "diagnostics"))
  with open(os.path.join(copy, "metrics.csv")) as f:
    kept = [line for line in f if ",diag/" not in line]
  with open(os.path.join(copy, "metrics.csv"), "w") as f:
    f.writelines(kept)
  proc = run_cli(f"--workdir={copy}", "--diagnostics=jacobian,reconstructions,weight_stats",
                 cwd=tmp_path, module="gmf_jax.diagnose")
  assert proc.returncode == 0, proc.stderr
  assert "step 20: jacobian, reconstructions, weight_stats" in proc.stdout
  for name in ("jacobian", "reconstructions", "weight_stats"):
    for step in (20, 40):
      a = np.load(os.path.join(run, "diagnostics", name, f"step_{step}.npz"))
      b = np.load(os.path.join(copy, "diagnostics", name, f"step_{step}.npz"))
      assert a.files == b.files
      for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
  wanted = {r for r in rows if r[1].split("/")[1] in ("jacobian", "reconstructions",
                                                      "weight_stats")}
  assert set(_diag_rows(copy)) == wanted


def test_classifier_diagnostics(tmp_path):
  entries = {"confusion_matrix": {"every_steps": 20}, "jacobian": {"schedule": "end"},
             "activation_stats": {"schedule": "end"}}
  config = _config("mlp.py", entries)
  gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / "run"))
  matrix = np.load(tmp_path / "run" / "diagnostics" / "confusion_matrix" / "step_40.npz")["matrix"]
  assert matrix.shape == (10, 10) and matrix.sum() == 256  # the probe: 256 test examples
  jac = np.load(tmp_path / "run" / "diagnostics" / "jacobian" / "step_40.npz")
  assert jac["singular_values"].shape == (64, 10)  # x (64) -> logits (10)
  rows = dict(((n, s), v) for s, n, v in _diag_rows(tmp_path / "run"))
  assert float(rows[("diag/activation_stats/dense_0/dead_fraction", "40")]) >= 0.0


@pytest.mark.parametrize("path, name, message", [
    ("mlp.py", "latent_space", "needs an encoder and a decoder"),
    ("mlp.py", "samples", "needs a VAE"),
    ("vae.py", "confusion_matrix", "needs a classifier"),
    ("vae.py", "jacobain", "Did you mean 'jacobian'"),
])
def test_unmet_requirements_are_refused_at_config_time(tmp_path, path, name, message):
  config = _config(path, {name: {"every_steps": 10}})
  with pytest.raises(ConfigError, match=message):
    gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_bad_diagnostic_option(tmp_path):
  config = _config("vae.py", {"jacobian": {"every_steps": 10, "of": "decoder", "modes": "fwd"}})
  with pytest.raises(ConfigError, match=r"diagnostics.jacobian.modes is not an option"):
    gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / "run"))


def test_user_diagnostic_from_a_file(tmp_path):
  (tmp_path / "my_diags.py").write_text(textwrap.dedent('''
      import jax
      import jax.numpy as jnp
      from gmf_jax.diagnostics import DiagnosticResult

      def make_logit_scale(exp, power=2):
        @jax.jit
        def compute(params, x):
          logits = exp.model.apply({"params": params}, x)
          return jnp.mean(jnp.abs(logits) ** power)

        def run(state, probe, rng):
          value = float(compute(state.params, probe["x"]))
          return DiagnosticResult(scalars={"value": value}, arrays={"value": [value]})

        return run
  '''))
  entry = {"fn": f"{tmp_path / 'my_diags.py'}:make_logit_scale", "every_steps": 20, "power": 1}
  config = _config("mlp.py", {"logit_scale": entry})
  gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / "run"))
  steps = [s for s, n, _ in _diag_rows(tmp_path / "run") if n == "diag/logit_scale/value"]
  assert sorted(steps) == ["20", "40"]
  assert (tmp_path / "run" / "diagnostics" / "logit_scale" / "step_20.npz").exists()


def _pairs(workdir):
  with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
    return [(r["step"], r["name"]) for r in csv.DictReader(f)]


def test_backfill_takes_relative_paths_and_replaces_what_ran_at_a_step(tmp_path, monkeypatch):
  """The README's form (`--workdir=runs/<run>`, relative) on a run and on an ensemble member;
  a rerun at a step where a diagnostic ran replaces its rows and files there."""
  from gmf_jax.diagnose import diagnose

  monkeypatch.chdir(tmp_path)
  config = _config("mlp.py", {"weight_stats": {"every_steps": 20}}, num_steps=40,
                   steps_per_call=20, **{"checkpoint.every_steps": 20})
  gmf_jax.train_and_evaluate(config, workdir="runs/r")
  trained = dict(((s, n), v) for s, n, v in _diag_rows("runs/r"))
  stale = tmp_path / "runs/r/diagnostics/weight_stats/step_40_stale.png"
  stale.write_bytes(b"not drawn by this run")
  proc = run_cli("--workdir=runs/r", "--diagnostics=weight_stats,activation_stats",
                 cwd=tmp_path, module="gmf_jax.diagnose")
  assert proc.returncode == 0, proc.stderr
  assert "step 40: activation_stats, weight_stats" in proc.stdout
  assert diagnose("runs/r", ["weight_stats"], steps=[40]) == {40: ["weight_stats"]}
  pairs = _pairs("runs/r")
  assert len(pairs) == len(set(pairs)), "a (step, name) twice in metrics.csv"
  again = dict(((s, n), v) for s, n, v in _diag_rows("runs/r") if "weight_stats" in n)
  assert again == trained  # the same values, once each
  assert not stale.exists()
  steps = [int(s) for s, _ in pairs]
  assert steps == sorted(steps)  # backfilled rows sit at their step, not at the end
  with open("runs/r/summary.json") as f:
    summary = json.load(f)["metrics"]
  entry = summary["diag/activation_stats/mean_dead_fraction"]
  assert entry["final_step"] == 40

  # An ensemble member, named relatively: its checkpoints live in the population's folder.
  ens = gmf_jax.load_config(str(CONFIGS / "mlp.py") + ":smoke",
                            {"num_seeds": 2, "num_steps": 20, "progress_bar": False})
  gmf_jax.run(ens, workdir="runs/ens")
  proc = run_cli("--workdir=runs/ens/seed=1", "--diagnostics=weight_stats", "--steps=latest",
                 cwd=tmp_path, module="gmf_jax.diagnose")
  assert proc.returncode == 0, proc.stderr
  assert "step 20: weight_stats" in proc.stdout
