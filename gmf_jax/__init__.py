"""gmf_jax: train and analyse neural networks with JAX and Flax.

From a notebook:

    import gmf_jax
    config = gmf_jax.load_config("configs/vae.py", {"lr": 1e-3})
    result = gmf_jax.train_and_evaluate(config, workdir="runs/my_vae")
    result.metrics["eval/nelbo"]
    gmf_jax.run(config)  # as the command line: one run, or a seed ensemble with num_seeds > 1
    gmf_jax.run_sweep("sweeps/vae_lr_beta.py")  # a sweep, every population one vmapped program

`import gmf_jax` and `load_config` stay light (no jax, flax, orbax, wandb or matplotlib), so a
typo in a config is reported in a fraction of a second; the training stack is imported the
first time `train_and_evaluate` (or `TrainResult`) is used.
"""

from gmf_jax.config import default_config, load_config
from gmf_jax.errors import ConfigError, NonFiniteError
from gmf_jax.train.preemption import Preempted

__version__ = "0.1.0"

_LAZY = {"run": "gmf_jax.main", "train_and_evaluate": "gmf_jax.train.loop",
         "TrainResult": "gmf_jax.train.loop",
         "run_sweep": "gmf_jax.sweep", "load_sweep": "gmf_jax.sweep",
         "seed_ensemble": "gmf_jax.sweep"}


# Subpackages reachable as attributes (`gmf_jax.sweep.make_sweep`, `gmf_jax.analysis`) without
# importing them first; each is imported the first time it is used.
_SUBMODULES = ("analysis", "checks", "data", "diagnose", "diagnostics", "models", "plot",
               "registry", "runlog", "sweep", "train")


def __getattr__(name: str):
  import importlib

  if name in _LAZY:
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # imported once
    return value
  if name in _SUBMODULES:
    return importlib.import_module(f"gmf_jax.{name}")  # sets the attribute itself
  raise AttributeError(f"module 'gmf_jax' has no attribute {name!r}")


def __dir__():
  return sorted({*globals(), *_LAZY, *_SUBMODULES})


__all__ = [
    "ConfigError",
    "NonFiniteError",
    "Preempted",
    "TrainResult",
    "default_config",
    "load_config",
    "load_sweep",
    "run",
    "run_sweep",
    "seed_ensemble",
    "train_and_evaluate",
]
