"""Shared fixtures: the repo root, a clean working folder, a tiny tfds dataset built offline."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

# wandb is off unless a test turns it on (tests of wandb set WANDB_MODE=offline themselves);
# a real offline run costs about a second per run.
os.environ["WANDB_MODE"] = "disabled"
os.environ["WANDB_SILENT"] = "true"

# A population from the command line shows the CPU as one device per core (gmf_jax/cpu_devices.py).
# The test workers already keep every core busy, so the tests' runs keep one CPU device;
# tests/test_cpu_devices.py and tests/test_mesh.py set XLA_FLAGS themselves to run on several.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Runs share one JAX compilation cache per checkout (git-ignored), as a user's runs share theirs.
os.environ.setdefault("GMF_JAX_COMPILE_CACHE_DIR",
                      str(ROOT / ".pytest_cache" / "jax-compile-cache"))
CONFIGS = ROOT / "configs"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
  """Runs the test from an empty folder, so a default `runs/` lands there."""
  monkeypatch.chdir(tmp_path)
  return tmp_path


def run_cli(*args: str, cwd, env=None, timeout=300,
            module="gmf_jax.main") -> subprocess.CompletedProcess:
  """Runs `python -m gmf_jax.main ARGS` (or another module) in a fresh process, as a user would."""
  full_env = {**os.environ, **(env or {})}
  return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env,
                        capture_output=True, text=True, timeout=timeout)


def tree_equal(a, b) -> bool:
  import jax

  leaves_a, tree_a = jax.tree_util.tree_flatten(a)
  leaves_b, tree_b = jax.tree_util.tree_flatten(b)
  return tree_a == tree_b and all(
      np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b, strict=True)
  )


@pytest.fixture(scope="session")
def tiny_tfds_dir(tmp_path_factory):
  """A real tfds dataset ('gmf_tiny_digits', array_record) with 8x8x1 uint8 images, built here."""
  from tests.tiny_tfds import GmfTinyDigits

  data_dir = tmp_path_factory.mktemp("tfds")
  GmfTinyDigits(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return data_dir
