"""Every bad input is refused at build time with one ConfigError naming the key and the value,
before anything is written or computed; switching a component's name does not trip over the
file's options for the old one.

(Models, synthetic data and diagnostics have their own table in test_component_checks.py.)
"""

import json
import os

import pytest

import gmf_jax
from gmf_jax import ConfigError
from gmf_jax.train.build import build_experiment
from tests.conftest import CONFIGS, run_cli

VAE = str(CONFIGS / "vae.py") + ":smoke"
MLP = str(CONFIGS / "mlp.py") + ":smoke"
CNN = str(CONFIGS / "cnn.py") + ":smoke"

# (config, overrides, a fragment of the one-line message)
BAD = [
    # the run's own keys
    (VAE, {"seed": -1}, r"seed=-1 must be an integer in \[0, 4.29497e\+09\]"),
    (VAE, {"seed": 2**32}, r"seed=4294967296 must be an integer"),
    (VAE, {"num_steps": 0}, r"num_steps=0 must be an integer in \[1,"),
    (VAE, {"num_steps": 2**31}, r"num_steps=2147483648 must be an integer in \[1,"),
    (VAE, {"num_epochs": 0}, r"num_epochs=0 must be an integer >= 1"),
    (VAE, {"batch_size": 0}, r"batch_size=0 must be an integer >= 1"),
    (VAE, {"batch_size": 5000}, r"batch_size=5000 is larger than the training set"),
    (VAE, {"eval_batch_size": -3}, r"eval_batch_size=-3 must be an integer >= 1"),
    (VAE, {"steps_per_call": 0}, r"steps_per_call=0 must be an integer >= 1"),
    (VAE, {"log_every_steps": 0}, r"log_every_steps=0 must be"),
    (VAE, {"eval_every_steps": -1}, r"eval_every_steps=-1 must be"),
    (VAE, {"probe_size": 0}, r"probe_size=0 must be an integer >= 1"),
    (VAE, {"on_nonfinite": "ignore"}, r"on_nonfinite='ignore' must be one of 'stop', 'skip'"),
    (VAE, {"max_consecutive_nonfinite": 0}, r"max_consecutive_nonfinite=0 must be"),
    (VAE, {"data.on_device": "maybe"}, r"data.on_device='maybe' must be one of"),
    (VAE, {"data.max_device_bytes": -1}, r"data.max_device_bytes=-1 must be an integer >= 0"),
    # checkpoints, wandb
    (VAE, {"checkpoint.every_steps": -5}, r"checkpoint.every_steps=-5 must be an integer >= 0"),
    (VAE, {"checkpoint.max_to_keep": 0}, r"checkpoint.max_to_keep=0 must be an integer >= 1"),
    (VAE, {"checkpoint.best_mode": "lowest"}, r"checkpoint.best_mode='lowest' must be one of"),
    (VAE, {"checkpoint.best_metric": "eval/acc"}, r"checkpoint.best_metric='eval/acc' is not an"),
    (VAE, {"wandb.init_timeout": 0.0}, r"wandb.init_timeout=0.0 must be > 0"),
    (VAE, {"wandb.project": "team/vae"}, r"wandb.project='team/vae' must be 1 to 128 char"),
    (VAE, {"wandb.tags": ("x" * 65,)}, r"wandb.tags: 'x+' must be a string of 1 to 64"),
    # the optimizer's own options
    (VAE, {"optimizer.learning_rate": 0.0}, r"optimizer.learning_rate=0.0 must be > 0"),
    (VAE, {"lr": -3e-4}, r"optimizer.learning_rate=-0.0003 must be > 0"),
    (VAE, {"lr": float("nan")}, r"optimizer.learning_rate=nan must be > 0"),
    (VAE, {"optimizer.b1": 5.0}, r"optimizer.b1=5.0 must be in \[0, 1\)"),
    (VAE, {"optimizer.b2": 1.0}, r"optimizer.b2=1.0 must be in \[0, 1\)"),
    (VAE, {"optimizer.eps": 0.0}, r"optimizer.eps=0.0 must be > 0"),
    (VAE, {"optimizer.weight_decay": -1e-4}, r"optimizer.weight_decay=-0.0001 must be >= 0"),
    (VAE, {"optimizer.grad_clip_norm": 0.0}, r"optimizer.grad_clip_norm=0.0 must be > 0"),
    (MLP, {"optimizer.momentum": -0.5}, r"optimizer.momentum=-0.5 must be in \[0, 1\)"),
    (MLP, {"optimizer.momentum": None}, r"optimizer.nesterov=True needs optimizer.momentum"),
    (MLP, {"optimizer.name": "rmsprop", "optimizer.decay": 1.0,
           "optimizer.nesterov": False}, r"optimizer.decay=1.0 must be in \[0, 1\)"),
    (VAE, {"optimizer.momentum": 0.9}, r"optimizer.momentum=0.9 has no effect with "
                                       r"optimizer.name='adam'"),
    (MLP, {"optimizer.name": "adam", "optimizer.nesterov": True},
     r"optimizer.nesterov=True has no effect with optimizer.name='adam'"),
    # the schedule's
    (VAE, {"schedule.warmup_steps": -1}, r"schedule.warmup_steps=-1 must be an integer >= 0"),
    (VAE, {"schedule.name": "step", "schedule.boundaries": (10.5,)},
     r"schedule.boundaries=\(10.5,\) must be a sequence of integers"),
    (VAE, {"schedule.end_value": 1.5}, r"schedule.end_value=1.5 must be in \[0, 1\]"),
    (VAE, {"schedule.decay_steps": 0}, r"schedule.decay_steps=0 must be an integer >= 1"),
    (VAE, {"schedule.name": "step", "schedule.boundaries": (30, 10)},
     r"schedule.boundaries=\(30, 10\) must be a sequence of integers >= 6, strictly"),
    (VAE, {"schedule.name": "step", "schedule.boundaries": (20, 20)}, r"strictly increasing"),
    (VAE, {"schedule.name": "step", "schedule.boundaries": (3,)},  # inside the 5-step warmup
     r"schedule.boundaries=\(3,\) must be a sequence of integers >= 6"),
    (VAE, {"schedule.name": "step", "schedule.decay_rate": 0.0},
     r"schedule.decay_rate=0.0 must be > 0"),
    (VAE, {"schedule.name": "exponential", "schedule.transition_steps": 0},
     r"schedule.transition_steps=0 must be an integer >= 1"),
    (VAE, {"schedule.name": "constant", "schedule.end_value": 0.2},
     r"schedule.end_value=0.2 has no effect with schedule.name='constant'"),
    (VAE, {"schedule.name": "warmup_cosine", "schedule.warmup_steps": 0},
     r"'warmup_cosine' needs schedule.warmup_steps > 0"),
    # the loss's
    (VAE, {"loss.beta": -1.0}, r"loss.beta=-1.0 must be >= 0"),
    (VAE, {"loss.likelihood": "gaussian", "loss.obs_sigma": 0.0},
     r"loss.obs_sigma=0.0 must be > 0"),
    (VAE, {"loss.likelihood": "poisson"}, r"loss.likelihood='poisson' must be one of"),
    (MLP, {"loss.label_smoothing": 1.5}, r"loss.label_smoothing=1.5 must be in \[0, 1\)"),
    (MLP, {"loss.label_smoothing": -0.1}, r"loss.label_smoothing=-0.1 must be in \[0, 1\)"),
    (VAE, {"loss.name": "reconstruction", "loss.beta": 2.0},
     r"loss.beta=2.0 has no effect with loss.name='reconstruction'"),
    (CNN, {"optimizer.weight_decay": float("inf")}, r"optimizer.weight_decay=inf must be >= 0"),
    # the trainer's parts: model state, augmentation, precision, accumulation, averaged weights
    (CNN, {"model.norm": "instance"}, r"model.norm='instance' must be one of"),
    (CNN, {"model.name": "resnet", "model.depth": 10}, r"model.depth=10 must be one of"),
    (CNN, {"model.name": "resnet", "model.width": 0}, r"model.width=0 must be an integer >= 1"),
    (CNN, {"data.augment.crop_padding": -1},
     r"data.augment.crop_padding=-1 must be an integer >= 0"),
    (CNN, {"data.augment.crop_padding": 8}, r"data.augment.crop_padding=8 is not smaller than"),
    (MLP, {"data.name": "moons", "data.augment.crop_padding": 2},
     r"data.augment.crop_padding=2 needs images \(H, W, C\); data 'moons' holds points"),
    (MLP, {"data.name": "moons", "data.augment.flip": True},
     r"data.augment.flip=True needs images"),
    (CNN, {"data.augment.noise_std": -0.1}, r"data.augment.noise_std=-0.1 must be >= 0"),
    (CNN, {"data.augment.noise_std": float("nan")}, r"data.augment.noise_std=nan must be >= 0"),
    (CNN, {"data.augment.fn": "no_such_module_xyz:fn"},
     r"data.augment.fn='no_such_module_xyz:fn': cannot import module"),
    (CNN, {"data.augment.fn": "no_colon"}, r"data.augment.fn='no_colon' must look like"),
    (CNN, {"precision.compute": "float8"}, r"precision.compute='float8' must be one of"),
    (CNN, {"optimizer.accumulate_steps": 0}, r"optimizer.accumulate_steps=0 must be an integer"),
    (CNN, {"optimizer.accumulate_steps": 5},
     r"batch_size=64 is not divisible by optimizer.accumulate_steps=5"),
    (CNN, {"ema.decay": 1.0}, r"ema.decay=1.0 must be in \(0, 1\)"),
    (CNN, {"ema.decay": 0.0}, r"ema.decay=0.0 must be in \(0, 1\)"),
    (CNN, {"ema.evaluate": "ema"}, r"ema.evaluate='ema' needs averaged weights: set ema.decay"),
    (CNN, {"ema.decay": 0.99, "ema.evaluate": "average"}, r"ema.evaluate='average' must be one"),
]


@pytest.mark.parametrize("config_path, overrides, message", BAD,
                         ids=[f"{i}-{next(iter(o))}" for i, (_, o, _) in enumerate(BAD)])
def test_bad_input_is_refused_at_build_time(in_tmp, config_path, overrides, message):
  config = gmf_jax.load_config(config_path, overrides)
  with pytest.raises(ConfigError, match=message) as caught:
    build_experiment(config)
  assert "\n" not in str(caught.value)
  assert os.listdir(in_tmp) == []  # nothing written


def test_the_table_is_large():
  assert len(BAD) >= 40


def test_cli_refuses_a_range_error_with_one_line_and_writes_nothing(tmp_path):
  proc = run_cli(f"--config={VAE}", "--config.optimizer.b1=5", cwd=tmp_path)
  assert proc.returncode == 2
  assert proc.stderr.strip() == "error: optimizer.b1=5.0 must be in [0, 1)."
  assert os.listdir(tmp_path) == []


def test_design_card_lr_sets_the_learning_rate(tmp_path):
  proc = run_cli(f"--config={VAE}", "--config.lr=3e-4", "--workdir=run", cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  config = json.loads((tmp_path / "run" / "config.json").read_text())
  assert config["optimizer"]["learning_rate"] == 3e-4 and "lr" not in config
  lrs = [line for line in (tmp_path / "run" / "metrics.csv").read_text().splitlines()
         if ",train/learning_rate," in line]
  rates = [float(line.split(",")[2]) for line in lrs]
  assert max(rates) <= 3e-4 and max(rates) > 2.5e-4  # the cosine peaks at 3e-4


def test_lr_alias_from_python_is_the_same_key():
  a = gmf_jax.load_config(VAE, {"lr": 3e-4})
  b = gmf_jax.load_config(VAE, ["--config.lr=3e-4"])
  assert a.optimizer.learning_rate == b.optimizer.learning_rate == 3e-4


def test_switching_a_component_leaves_the_files_options_for_the_old_one_out():
  # vae.py sets schedule.end_value=0.1 for its warmup_cosine schedule.
  config = gmf_jax.load_config(VAE, ["--config.schedule.name=constant"])
  exp = build_experiment(config)
  assert exp.config.schedule.name == "constant"
  assert exp.config.schedule.end_value == 0.0  # back at its default: config.json is true
  assert exp.config.schedule.warmup_steps == config.schedule.warmup_steps  # every schedule's
  assert float(exp.schedule(30)) == pytest.approx(1e-3)
  # mlp.py sets momentum and nesterov for sgd: switching to adam drops both.
  exp = build_experiment(gmf_jax.load_config(MLP, {"optimizer.name": "adam"}))
  assert exp.config.optimizer.momentum is None and exp.config.optimizer.nesterov is False
  # A loss switch drops the old loss's fields (they are not default keys: removed).
  exp = build_experiment(gmf_jax.load_config(
      VAE, {"loss.name": "reconstruction", "model.name": "autoencoder"}))
  assert "beta" not in exp.config.loss and exp.config.loss.likelihood == "bernoulli"


def test_a_file_inconsistent_with_itself_is_refused(tmp_path):
  path = tmp_path / "inconsistent.py"
  path.write_text(
      "from gmf_jax.config import default_config\n"
      "def get_config():\n"
      "  c = default_config()\n"
      "  c.optimizer.name = 'adam'\n"
      "  c.optimizer.momentum = 0.9\n"
      "  return c\n")
  with pytest.raises(ConfigError, match=r"optimizer.momentum=0.9 \(set in .*inconsistent.py; "
                                        r"remove it there\) has no effect"):
    build_experiment(gmf_jax.load_config(str(path)))


def test_a_copied_config_keeps_the_switch_rule():
  import copy
  import pickle

  config = gmf_jax.load_config(VAE, ["--config.schedule.name=constant"])
  for copied in (copy.deepcopy(config), pickle.loads(pickle.dumps(config))):
    assert build_experiment(copied).config.schedule.end_value == 0.0
