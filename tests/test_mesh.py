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
# One device, also for a population (the command line would show a CPU device per core).
ONE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1", "WANDB_MODE": "offline"}
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
    assert json.load(f)["mesh"] == {"axes": {"members": 1, "data": 4, "model": 1},
                                    "devices": 4, "platform": "cpu", "processes": 1,
                                    "split_leaves": 0}
  with open(one_device / "summary.json") as f:
    assert json.load(f)["mesh"]["devices"] == 1


def test_a_model_axis_splits_wide_layers_and_matches_one_device(tmp_path):
  wide = ["--config.model.hidden=[256]"]  # 64 x 256 and 256 x 10 kernels: the first is wide
  one = _run(tmp_path, "one", ONE, *wide)
  split = _run(tmp_path, "split", FOUR, *wide, "--config.mesh.model=2")
  assert one.returncode == 0 and split.returncode == 0, split.stderr[-2000:]
  assert _close(_eval(tmp_path / "split"), _eval(tmp_path / "one"))
  with open(tmp_path / "split" / "summary.json") as f:
    mesh = json.load(f)["mesh"]
  # The 64 x 256 kernel and its two momentum buffers (sgd with nesterov: one trace) are split.
  assert mesh["axes"] == {"members": 1, "data": 2, "model": 2} and mesh["split_leaves"] >= 2


def test_the_chunk_runs_on_every_device_of_the_mesh():
  """The training chunk on 4 devices takes and returns the state replicated on all 4."""
  script = """
import functools, jax, numpy as np
from gmf_jax import load_config
from gmf_jax.train import build, step as step_lib
from gmf_jax.train.chunks import make_feed
for members, size in ((1, 1), (2, 4)):
  config = load_config(%r, {"num_steps": 20, "steps_per_call": 20, "progress_bar": False,
                            "mesh.members": members})
  exp = build.build_experiment(config)
  keys = jax.tree_util.tree_map(lambda *a: np.stack(a),
                                *[step_lib.make_keys(s) for s in range(size)])
  values = {k: np.stack([np.asarray(v)] * size) for k, v in exp.hparams.items()}
  state = build.init_population(exp, keys, values)
  state, keys = exp.layout.put_population(state, keys)
  out, _ = make_feed(exp, keys, state, size).run(state, 0, 20)
  sharding = jax.tree_util.tree_leaves(out.params)[0].sharding
  print(exp.layout.members, exp.layout.data, len(sharding.device_set), sharding.spec,
        out.step.sharding.is_fully_replicated)
from gmf_jax.train.mesh import make_layout
mesh = load_config(%r).mesh  # the default: mesh.members=0, mesh.data=0
print([(l.members, l.data) for l in (make_layout(mesh, 64, population=n) for n in (1, 4, 6))])
"""
  done = subprocess.run([sys.executable, "-c", script % ((str(CONFIGS / "mlp.py"),) * 2)],
                        cwd=ROOT,
                        env={**os.environ, **FOUR}, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  # Data only: parameters replicated on all 4. Members x data: the member axis split in 2.
  # The default (members 0): as many devices as divide the population, the rest on the batch.
  assert done.stdout.splitlines() == ["1 4 4 P(None,) True", "2 2 4 P('members',) True",
                                      "[(1, 4), (4, 1), (2, 2)]"]


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
  with pytest.raises(ConfigError,
                     match=r"mesh.data=2 x mesh.members=1 x mesh.model=1 = 2 devices, but 1 cpu"):
    make_layout(config.mesh, config.batch_size)
  four = [types.SimpleNamespace(platform="gpu")] * 4
  with pytest.raises(ConfigError, match=r"batch_size=62 does not split evenly over the 4 "
                                        r"devices.*--config.batch_size=60"):
    make_layout(config.mesh.__class__({"data": 0, "members": 1}), 62, devices=four)
  with pytest.raises(ConfigError, match="mesh.data=-1"):
    make_layout(config.mesh.__class__({"data": -1, "members": 1}), 64)
  with pytest.raises(ConfigError, match=r"mesh.members=3 does not divide the 4 visible"):
    make_layout(config.mesh.__class__({"data": 0, "members": 3}), 64, devices=four)
  with pytest.raises(ConfigError, match=r"mesh.data=4 x mesh.members=2 x mesh.model=1 = 8 "
                                        r"devices, but 4"):
    make_layout(config.mesh.__class__({"data": 4, "members": 2}), 64, devices=four)
  with pytest.raises(ConfigError, match=r"mesh.members x mesh.model=6 does not divide the 4"):
    make_layout(config.mesh.__class__({"data": 0, "members": 2, "model": 3}), 64, devices=four)
  done = _run(tmp_path, "bad", FOUR, "--config.batch_size=62")
  assert done.returncode == 2 and "batch_size=62 does not split evenly" in done.stderr
  assert not (tmp_path / "bad").exists()  # refused before the run folder is written
  done = _run(tmp_path, "odd", FOUR, "--config.num_seeds=3", "--config.mesh.members=2")
  assert done.returncode == 2, done.stderr[-2000:]
  assert "3 member(s), which do not split evenly over mesh.members=2" in done.stderr
  assert not any((tmp_path / "odd").glob("*/metrics.csv"))  # no member started


@pytest.fixture(scope="module")
def population_on_one(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("pop")
  done = _run(tmp, "one", ONE, "--config.num_seeds=4")
  assert done.returncode == 0, done.stderr[-2000:]
  return tmp / "one"


@pytest.mark.parametrize("on_device", ["yes", "no"])
def test_a_population_spread_over_devices_matches_it_on_one(population_on_one, tmp_path,
                                                            on_device):
  """4 seeds on a 2 x 2 mesh (2 members per device pair, each batch split in 2) against the
  same population on one device. Streamed batches are (members, steps, B, ...), both axes
  split; they are the on-device batches (tests/test_training.py), so one reference serves."""
  done = _run(tmp_path, "four", FOUR, "--config.num_seeds=4", "--config.mesh.members=2",
              f"--config.data.on_device={on_device}")
  assert done.returncode == 0, done.stderr[-2000:]
  for seed in range(4):
    assert _close(_eval(tmp_path / "four" / f"seed={seed}"),
                  _eval(population_on_one / f"seed={seed}"))
  with open(tmp_path / "four" / "seed=3" / "summary.json") as f:
    assert json.load(f)["mesh"]["axes"] == {"members": 2, "data": 2, "model": 1}


def test_batchnorm_over_four_devices_uses_the_global_batch(tmp_path):
  """BatchNorm with augmentation and accumulation, each batch split over 4 devices: the step is
  one SPMD program over the global batch, so the statistics (and so the run) match one device;
  statistics of each device's quarter would not."""
  import orbax.checkpoint as ocp

  import gmf_jax

  over = {"model.norm": "batch", "data.augment.crop_padding": 1, "data.augment.flip": True,
          "optimizer.accumulate_steps": 2, "num_steps": 20, "steps_per_call": 20,
          "eval_every_steps": 20, "checkpoint.every_steps": 20, "model.features": (8, 16),
          "model.dense": 32}
  cnn = str(CONFIGS / "cnn.py") + ":smoke"
  gmf_jax.train_and_evaluate(gmf_jax.load_config(cnn, over), str(tmp_path / "one"))
  done = run_cli(f"--config={cnn}", *(f"--config.{k}={v}" for k, v in over.items()),
                 f"--workdir={tmp_path / 'four'}", cwd=tmp_path, env=FOUR)
  assert done.returncode == 0, done.stderr[-2000:]
  with open(tmp_path / "four" / "summary.json") as f:
    assert json.load(f)["mesh"]["axes"]["data"] == 4
  assert _close(_eval(tmp_path / "four", 20), _eval(tmp_path / "one", 20))
  import jax
  import numpy as np

  path = lambda run: str(tmp_path / run / "checkpoints" / "20" / "state")
  one = ocp.StandardCheckpointer().restore(path("one"))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  like = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                                one)
  four = ocp.StandardCheckpointer().restore(path("four"), like)  # saved from 4 devices
  stats = [s["model_state"]["batch_stats"] for s in (one, four)]
  for a, b in zip(jax.tree_util.tree_leaves(stats[0]), jax.tree_util.tree_leaves(stats[1]),
                  strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
