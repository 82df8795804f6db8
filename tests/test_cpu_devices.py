"""A command-line population on the CPU uses every core: one CPU device per core, the members
split over them (gmf_jax/cpu_devices.py, `mesh.members=0` in gmf_jax/train/mesh.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gmf_jax.cpu_devices import device_count_for, usable_cores
from gmf_jax.train.mesh import _auto_members
from tests.conftest import CONFIGS, ROOT, run_cli

# No device count chosen by the environment (the user's or another test's).
CLEAN = {"XLA_FLAGS": "", "WANDB_MODE": "offline"}


def test_the_device_count_divides_every_population():
  assert device_count_for([16], cores=2) == 2
  assert device_count_for([3], cores=2) == 1
  assert device_count_for([16, 8], cores=8) == 8
  assert device_count_for([6, 4], cores=8) == 2
  assert device_count_for([12], cores=8) == 6
  assert device_count_for([1], cores=8) == 1  # a population of one is the plain run
  assert device_count_for([], cores=8) == 1


def test_auto_members_divide_the_population_and_the_devices_left():
  assert _auto_members(1, 4, 1, 0) == 1  # a single run: every device on the batch
  assert _auto_members(16, 4, 1, 0) == 4
  assert _auto_members(6, 4, 1, 0) == 2  # the other 2 devices split the batch
  assert _auto_members(16, 4, 1, 2) == 2  # an explicit mesh.data=2 leaves 2
  assert _auto_members(16, 4, 2, 0) == 2  # mesh.model=2 leaves 2
  assert _auto_members(16, 4, 3, 0) == 1  # does not divide: make_layout says so


def _spread(env, *args):
  script = (f"from gmf_jax import cpu_devices\n"
            f"{'cpu_devices.allow()' if 'allow' in args else ''}\n"
            f"import jax, ml_collections\n"
            f"mesh = ml_collections.ConfigDict({{'data': 0, 'members': 0, 'model': 1}})\n"
            f"{'mesh.members = 1' if 'explicit' in args else ''}\n"
            f"print(cpu_devices.spread([4], [mesh]), jax.device_count())\n")
  done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                        text=True, timeout=120, env={**os.environ, **env})
  assert done.returncode == 0, done.stderr[-2000:]
  return done.stdout.split()


@pytest.mark.skipif(usable_cores() < 2, reason="needs 2 cores (CI has 2)")
def test_spread_only_where_allowed_and_the_user_chose_nothing():
  assert _spread(CLEAN, "allow") == ["2", "2"]
  assert _spread(CLEAN) == ["1", "1"]  # a Python session that did not allow it
  assert _spread(CLEAN, "allow", "explicit") == ["1", "1"]  # --config.mesh.members=1
  assert _spread({**CLEAN, "XLA_FLAGS": "--xla_force_host_platform_device_count=3"},
                 "allow") == ["1", "3"]
  assert _spread({**CLEAN, "JAX_NUM_CPU_DEVICES": "1"}, "allow") == ["1", "1"]


@pytest.mark.skipif(usable_cores() < 2, reason="needs 2 cores (CI has 2)")
def test_an_ensemble_from_the_command_line_splits_its_members_over_the_cores(tmp_path):
  done = run_cli(f"--config={CONFIGS / 'mlp.py'}:smoke", "--config.num_seeds=2",
                 "--config.num_steps=20", f"--workdir={tmp_path / 'ens'}", cwd=tmp_path,
                 env=CLEAN)
  assert done.returncode == 0, done.stderr[-2000:]
  for seed in range(2):
    summary = json.loads((tmp_path / "ens" / f"seed={seed}" / "summary.json").read_text())
    assert summary["mesh"]["axes"] == {"members": 2, "data": 1, "model": 1}
    assert summary["mesh"]["devices"] == 2
    config = json.loads((tmp_path / "ens" / f"seed={seed}" / "config.json").read_text())
    assert config["mesh"]["members"] == 0  # the config as given; the layout is the summary's


@pytest.mark.skipif(usable_cores() < 2, reason="needs 2 cores (CI has 2)")
def test_a_sweep_from_the_command_line_splits_its_population_over_the_cores(tmp_path):
  (tmp_path / "grid.py").write_text(
      "def get_sweep():\n"
      f"  return {{'config': {str(CONFIGS / 'mlp.py') + ':smoke'!r}, 'method': 'grid',\n"
      "          'parameters': {'optimizer.learning_rate': {'values': [0.05, 0.1]}}}\n")
  done = run_cli("--sweep=grid.py", f"--workdir={tmp_path / 'sweep'}", "--config.num_steps=20",
                 cwd=tmp_path, env=CLEAN, module="gmf_jax.sweep")
  assert done.returncode == 0, done.stderr[-2000:]
  summaries = list((tmp_path / "sweep").glob("*/summary.json"))
  assert len(summaries) == 2
  for path in summaries:
    assert json.loads(path.read_text())["mesh"]["axes"] == {"members": 2, "data": 1, "model": 1}
