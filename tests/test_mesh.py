"""Data parallelism over a device mesh (train/mesh.py), on 4 CPU devices.

The device count is fixed when jax starts, so the multi-device runs are fresh processes with
XLA_FLAGS=--xla_force_host_platform_device_count=4, as a user would run them. Tolerance: 4
devices split each batch and all-reduce the gradients, so sums are taken in another order; on
this CPU the eval loss after 60 steps differs from the 1-device run by < 1e-6 relative, and we
allow 1e-4.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import types

import pytest

from gmf_jax import ConfigError, load_config
from gmf_jax.train.mesh import make_layout
from tests.conftest import CONFIGS, ROOT, run_cli

FOUR = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "WANDB_MODE": "offline"}
ONE = {"XLA_FLAGS": "", "WANDB_MODE": "offline"}
ARGS = ["--config=" + str(CONFIGS / "mlp.py") + ":smoke", "--config.num_steps=60",
        "--config.steps_per_call=20", "--config.log_every_steps=10",
        "--config.eval_every_steps=20", "--config.checkpoint.every_steps=20"]
RTOL = 1e-4


def _eval(folder, step=60):
  with open(os.path.join(folder, "metrics.csv")) as f:
    return {r["name"]: float(r["value"]) for r in csv.DictReader(f)
            if r["step"] == str(step) and r["name"].startswith("eval/")}


def _run(tmp_path, name, env, *extra):
  done = run_cli(*ARGS, *extra, f"--workdir={tmp_path / name}", cwd=tmp_path, env=env)
  return done


def _close(a, b):
  return all(abs(a[k] - b[k]) <= RTOL * max(abs(a[k]), 1e-12) for k in a) and a.keys() == b.keys()


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("one")
  done = _run(tmp, "run", ONE)
  assert done.returncode == 0, done.stderr[-2000:]
  return tmp / "run"


def test_four_devices_match_one_and_record_the_mesh(one_device, tmp_path):
  done = _run(tmp_path, "four", FOUR)
  assert done.returncode == 0, done.stderr[-2000:]
  assert _close(_eval(tmp_path / "four"), _eval(one_device))
  with open(tmp_path / "four" / "summary.json") as f:
    assert json.load(f)["mesh"] == {"axes": {"data": 4}, "devices": 4, "platform": "cpu"}
  with open(one_device / "summary.json") as f:
    assert json.load(f)["mesh"]["devices"] == 1


def test_the_chunk_runs_on_every_device_of_the_mesh():
  """The training chunk on 4 devices takes and returns the state replicated on all 4."""
  script = """
import functools, jax, numpy as np
from gmf_jax import load_config
from gmf_jax.train import build, step as step_lib
from gmf_jax.train.loop import _make_feed
config = load_config(%r, {"num_steps": 20, "steps_per_call": 20, "progress_bar": False})
exp = build.build_experiment(config)
keys = jax.tree_util.tree_map(lambda a: a[None], step_lib.make_keys(0))
state = build.init_population(exp, keys, {k: np.asarray(v)[None] for k, v in exp.hparams.items()})
state, keys = exp.layout.put((state, keys))
run_chunk, _, _ = _make_feed(exp, keys, state, 1)
out, _ = run_chunk(state, 0, 20)
leaf = jax.tree_util.tree_leaves(out.params)[0]
sharding = leaf.sharding
print(len(jax.devices()), exp.layout.data, len(sharding.device_set), sharding.is_fully_replicated)
"""
  done = subprocess.run([sys.executable, "-c", script % str(CONFIGS / "mlp.py")], cwd=ROOT,
                        env={**os.environ, **FOUR}, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.split() == ["4", "4", "4", "True"]


@pytest.mark.parametrize("first,then", [(FOUR, ONE), (ONE, FOUR)], ids=["4to1", "1to4"])
def test_a_checkpoint_saved_on_some_devices_resumes_on_others(one_device, tmp_path, first,
                                                               then):
  stopped = _run(tmp_path, "run", {**first, "GMF_JAX_FAILPOINTS": "eval@2=SIGTERM"})
  assert stopped.returncode != 0
  with open(tmp_path / "run" / "metadata.json") as f:
    assert json.load(f)["status"] == "preempted"
  resumed = _run(tmp_path, "run", then)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resum" in resumed.stdout + resumed.stderr
  assert _close(_eval(tmp_path / "run"), _eval(one_device))


def test_a_mesh_that_does_not_fit_is_refused_before_anything_runs(tmp_path):
  config = load_config(str(CONFIGS / "mlp.py"), {"mesh.data": 2})
  with pytest.raises(ConfigError, match=r"mesh.data=2 does not match the 1 visible cpu"):
    make_layout(config.mesh, config.batch_size)
  four = [types.SimpleNamespace(platform="gpu")] * 4
  with pytest.raises(ConfigError, match=r"batch_size=62 does not split evenly over the 4 "
                                        r"devices.*--config.batch_size=60"):
    make_layout(config.mesh.__class__({"data": 0}), 62, devices=four)
  with pytest.raises(ConfigError, match="mesh.data=-1"):
    make_layout(config.mesh.__class__({"data": -1}), 64)
  done = _run(tmp_path, "bad", FOUR, "--config.batch_size=62")
  assert done.returncode == 2 and "batch_size=62 does not split evenly" in done.stderr
  assert not (tmp_path / "bad").exists()  # refused before the run folder is written


def test_a_streamed_population_on_four_devices_matches_one(one_device, tmp_path):
  """The other feed and the member axis: host batches (members, steps, B, ...) split along B.

  Member seed=0 is compared with the 1-device run of seed 0 (streamed batches are the
  on-device ones, and a member matches its standalone run to ~1e-7: tests/test_population.py).
  """
  done = _run(tmp_path, "four", FOUR, "--config.data.on_device=no", "--config.num_seeds=2")
  assert done.returncode == 0, done.stderr[-2000:]
  assert _close(_eval(tmp_path / "four" / "seed=0"), _eval(one_device))
  assert _eval(tmp_path / "four" / "seed=1") != _eval(one_device)  # its own seed
