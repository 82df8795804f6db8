"""Loading configs: variants, overrides from Python and CLI strings, and their errors."""

import pytest

import gmf_jax
from gmf_jax import ConfigError
from tests.conftest import CONFIGS

VAE = str(CONFIGS / "vae.py")


def test_overrides_from_dict_and_cli_strings_agree():
  a = gmf_jax.load_config(VAE, {"optimizer.learning_rate": 3e-4, "model.hidden": (32,)})
  b = gmf_jax.load_config(VAE, ["--config.optimizer.learning_rate=3e-4", "model.hidden=(32,)"])
  assert a.optimizer.learning_rate == b.optimizer.learning_rate == 3e-4
  assert tuple(a.model.hidden) == tuple(b.model.hidden) == (32,)


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("batch_size=32", "batch_size", 32),
        ("batch_size=1e2", "batch_size", 100),
        ("progress_bar=false", "progress_bar", False),
        ("optimizer.grad_clip_norm=1.5", "optimizer.grad_clip_norm", 1.5),  # None placeholder
        ("optimizer.grad_clip_norm=None", "optimizer.grad_clip_norm", None),
        ("data.name=moons", "data.name", "moons"),
        ("schedule.boundaries=[100, 200]", "schedule.boundaries", (100, 200)),
    ],
)
def test_string_values_are_parsed_by_field_type(text, key, expected):
  config = gmf_jax.load_config(VAE, [text])
  value = config
  for part in key.split("."):
    value = value[part]
  assert value == expected and type(value) is type(expected)


def test_variant_is_passed_to_get_config():
  config = gmf_jax.load_config(VAE + ":smoke,conv")
  assert config.num_steps == 40 and config.model.name == "conv_vae"


def test_config_is_locked():
  config = gmf_jax.load_config(VAE)
  with pytest.raises(AttributeError):
    config.optimizer.lerning_rate = 1.0


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"optimizer.lerning_rate": 1.0}, r"unknown config key 'optimizer.lerning_rate'.*"
                                          r"Did you mean 'optimizer.learning_rate'"),
        (["--config.optimizer.lerning_rate=1"], r"optimizer.lerning_rate"),
        (["--config.batch_size=abc"], r"batch_size='abc'.*int"),
        ({"batch_size": "abc"}, r"batch_size='abc'.*int"),
        ({"optimizer.learning_rate": "fast"}, r"optimizer.learning_rate='fast'.*float"),
        ({"nosection.x": 1}, r"unknown config key 'nosection.x'"),
        (["--config.batch_size"], r"--config.key=value"),
    ],
)
def test_bad_overrides_name_the_key(overrides, match):
  with pytest.raises(ConfigError, match=match):
    gmf_jax.load_config(VAE, overrides)


def test_missing_config_file():
  with pytest.raises(ConfigError, match=r"config file 'configs/nope.py' does not exist"):
    gmf_jax.load_config("configs/nope.py")


def test_unknown_variant_is_a_config_error():
  with pytest.raises(ConfigError, match="unknown variant 'tiny'"):
    gmf_jax.load_config(VAE + ":tiny")


def test_config_file_without_get_config(tmp_path):
  path = tmp_path / "bad.py"
  path.write_text("x = 1\n")
  with pytest.raises(ConfigError, match="defines no get_config"):
    gmf_jax.load_config(str(path))


@pytest.mark.parametrize("name", ["vae", "mlp", "cnn", "vae_mnist", "resnet"])
@pytest.mark.parametrize("variant", ["", ":smoke"])
def test_shipped_configs_load(name, variant):
  config = gmf_jax.load_config(str(CONFIGS / f"{name}.py") + variant)
  for key in ("seed", "num_steps", "batch_size", "steps_per_call", "log_every_steps",
              "eval_every_steps", "model.name", "data.name", "loss.name", "optimizer.name",
              "optimizer.learning_rate", "optimizer.weight_decay", "optimizer.grad_clip_norm",
              "schedule.name", "schedule.warmup_steps"):
    node = config
    for part in key.split("."):
      assert part in node, f"{name}{variant} lacks {key}"
      node = node[part]
