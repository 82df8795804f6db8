"""A user's own model and dataset, in their own files, train through a config."""

import json
import textwrap

import pytest

import gmf_jax
from tests.conftest import CONFIGS, run_cli

USER_MODELS = textwrap.dedent('''
    import flax.linen as nn
    import jax


    class TinyVAE(nn.Module):
      """A user VAE: one hidden layer, follows the VAE contract."""

      data_shape: tuple
      latent_dim: int = 2
      width: int = 32

      def encode(self, x):
        h = nn.relu(nn.Dense(self.width)(x.reshape((x.shape[0], -1))))
        return nn.Dense(self.latent_dim)(h), nn.Dense(self.latent_dim)(h)

      def decode(self, z):
        out = nn.Dense(64)(nn.relu(nn.Dense(self.width)(z)))
        return out.reshape((z.shape[0], *self.data_shape))

      @nn.compact
      def __call__(self, x, train=False):
        mean, logvar = self.encode(x)
        eps = jax.random.normal(self.make_rng("sample"), mean.shape)
        return self.decode(mean + eps * jax.numpy.exp(0.5 * logvar)), mean, logvar
''')

USER_CONFIG = textwrap.dedent('''
    from gmf_jax.config import default_config


    def get_config(arg=None):
      c = default_config()
      c.name = "user"
      c.num_steps, c.steps_per_call, c.eval_every_steps, c.log_every_steps = 30, 10, 30, 10
      c.batch_size = 32
      c.progress_bar = False
      c.data.name = "digits"
      c.data.binarize = True
      c.model.name = "my_models:TinyVAE"
      c.model.width = 16
      c.loss.name = "elbo"
      return c
''')


def test_user_model_module_from_pythonpath_via_cli(tmp_path):
  user = tmp_path / "user_code"
  user.mkdir()
  (user / "my_models.py").write_text(USER_MODELS)
  (user / "my_config.py").write_text(USER_CONFIG)
  proc = run_cli(f"--config={user / 'my_config.py'}", "--workdir=out", cwd=tmp_path,
                 env={"PYTHONPATH": str(user)})
  assert proc.returncode == 0, proc.stderr
  summary = json.loads((tmp_path / "out" / "summary.json").read_text())
  assert summary["status"] == "completed"
  # 16 hidden units: the user's field reached the model (the built-in MLP VAE is far larger).
  assert summary["num_params"] < 5000
  assert json.loads((tmp_path / "out" / "config.json").read_text())["model"]["width"] == 16


def test_user_model_from_a_file_path(tmp_path):
  (tmp_path / "models_file.py").write_text(USER_MODELS)
  config = gmf_jax.load_config(str(CONFIGS / "vae.py") + ":smoke")
  with config.unlocked():
    config.model = {"name": f"{tmp_path / 'models_file.py'}:TinyVAE", "latent_dim": 3}
  result = gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / "run"))
  assert result.state.params["Dense_0"]["kernel"].shape == (64, 32)  # the user's layer
  assert result.metrics["eval/nelbo"] > 0


def test_user_dataset_loader(tmp_path):
  (tmp_path / "my_data.py").write_text(textwrap.dedent('''
      import numpy as np
      from gmf_jax.data import ArraySplit, Dataset

      def load(n=200, dim=3):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(n, dim)).astype(np.float32)
        y = (x[:, 0] > 0).astype(np.int32)
        split = ArraySplit({"x": x, "y": y})
        return Dataset("mine", split, split, (dim,), num_classes=2, kind="points")
  '''))
  config = gmf_jax.load_config(str(CONFIGS / "mlp.py") + ":smoke", {"batch_size": 20})
  with config.unlocked():
    config.data = {"name": f"{tmp_path / 'my_data.py'}:load", "dim": 5,
                   "on_device": "auto", "max_device_bytes": 2**30, "binarize": False}
  result = gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / "run"))
  assert result.state.params["dense_0"]["kernel"].shape == (5, 64)


def test_unknown_user_module_is_a_clear_error(tmp_path):
  proc = run_cli(f"--config={CONFIGS / 'vae.py'}:smoke", "--config.model.name=nope_pkg:VAE",
                 cwd=tmp_path)
  assert proc.returncode == 2
  assert "cannot import module 'nope_pkg'" in proc.stderr


TINY_MLP = textwrap.dedent('''
    import flax.linen as nn


    class TinyMLP(nn.Module):
      num_classes: int
      width: int = 32

      @nn.compact
      def __call__(self, x, train=False):
        h = nn.relu(nn.Dense(self.width)(x.reshape((x.shape[0], -1))))
        return nn.Dense(self.num_classes)(h)
''')

USER_LOADER = textwrap.dedent('''
    import numpy as np
    from gmf_jax.data import ArraySplit, Dataset

    def load(n: int = 200, dim: int = 3):
      rng = np.random.default_rng(0)
      x = rng.normal(size=(n, dim)).astype(np.float32)
      split = ArraySplit({"x": x, "y": (x[:, 0] > 0).astype(np.int32)})
      return Dataset("mine", split, split, (dim,), num_classes=2, kind="points")
''')


def test_a_component_named_on_the_command_line_is_configured_there(tmp_path):
  """A user model's fields and a user loader's arguments are config keys once named (in any
  order); a built-in named instead of the file's brings its own fields too."""
  (tmp_path / "my_models.py").write_text(TINY_MLP)
  (tmp_path / "my_data.py").write_text(USER_LOADER)
  proc = run_cli(f"--config={CONFIGS / 'mlp.py'}:smoke", "--config.model.width=16",
                 "--config.model.name=my_models.py:TinyMLP", "--config.data.name=my_data.py:load",
                 "--config.data.dim=5", "--config.batch_size=20", "--workdir=out", cwd=tmp_path)
  assert proc.returncode == 0, proc.stderr
  saved = json.loads((tmp_path / "out" / "config.json").read_text())
  assert saved["model"] == {"name": "my_models.py:TinyMLP", "width": 16}  # mlp's keys left out
  assert saved["data"]["dim"] == 5
  summary = json.loads((tmp_path / "out" / "summary.json").read_text())
  assert summary["num_params"] == 5 * 16 + 16 + 16 * 2 + 2  # the user's width and data

  config = gmf_jax.load_config(str(CONFIGS / "mlp.py"), ["--config.model.name=cnn_classifier",
                                                         "--config.model.kernel_size=5"])
  assert config.model.kernel_size == 5  # a field configs/mlp.py does not list


@pytest.mark.parametrize("args, message", [
    (["--config.model.name=my_models.py:TinyMLP", "--config.model.widht=16"],
     "unknown config key 'model.widht'. Did you mean 'model.width'? "
     "model.name='my_models.py:TinyMLP' takes: num_classes, width"),
    (["--config.model.name=my_models.py:TinyMLP", "--config.model.width=wide"],
     "override model.width='wide': cannot read 'wide' as int"),
    (["--config.data.name=my_data.py:load", "--config.data.dim=2.5"],
     "override data.dim='2.5': cannot read '2.5' as int"),
])
def test_a_named_component_s_options_are_checked_like_any_key(tmp_path, args, message):
  (tmp_path / "my_models.py").write_text(TINY_MLP)
  (tmp_path / "my_data.py").write_text(USER_LOADER)
  proc = run_cli(f"--config={CONFIGS / 'mlp.py'}:smoke", *args, cwd=tmp_path)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
  assert not (tmp_path / "runs").exists()
