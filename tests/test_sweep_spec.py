"""Sweep files: expansion into members (order, names, seeds, zip, sampling) and every bad input."""

import json
import math
import shutil
import subprocess
import sys

import pytest

from gmf_jax import ConfigError
from gmf_jax.sweep import spec
from tests.conftest import CONFIGS, ROOT

MLP = str(CONFIGS / "mlp.py")
VAE = str(CONFIGS / "vae.py")


def write_sweep(tmp_path, definition, name="sweep.py"):
  """A sweep file whose get_sweep() returns `definition` (written as its repr)."""
  path = tmp_path / name
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(f"def get_sweep():\n  return {definition!r}\n")
  return str(path)


def load(tmp_path, definition, overrides=None):
  return spec.load_sweep(write_sweep(tmp_path, definition), overrides)


def names(sweep):
  return [m.name for m in sweep.members]


def test_grid_is_a_product_in_parameter_order_with_seeds_innermost(tmp_path):
  sweep = load(tmp_path, {
      "config": MLP,
      "parameters": {
          "lr": {"values": [0.1, 0.01]},
          "model.hidden": {"values": [(64,), (64, 32)]},
          "model.activation": {"value": "tanh"},  # a constant: in every member, in no name
      },
      "seeds": 2,
  })
  assert sweep.name == "sweep" and sweep.file == str(tmp_path / "sweep.py")
  assert names(sweep) == [
      "lr=0.1,hidden=64,seed=0", "lr=0.1,hidden=64,seed=1",
      "lr=0.1,hidden=64x32,seed=0", "lr=0.1,hidden=64x32,seed=1",
      "lr=0.01,hidden=64,seed=0", "lr=0.01,hidden=64,seed=1",
      "lr=0.01,hidden=64x32,seed=0", "lr=0.01,hidden=64x32,seed=1",
  ]
  first = sweep.members[1]
  assert first.overrides == {"optimizer.learning_rate": 0.1, "model.hidden": (64,),
                             "model.activation": "tanh", "seed": 1}
  assert first.seed == 1
  config = spec.member_config(sweep, first)
  assert config.optimizer.learning_rate == 0.1 and config.model.activation == "tanh"
  assert tuple(config.model.hidden) == (64,) and config.seed == 1


def test_seeds_start_at_the_base_seed_after_global_overrides(tmp_path):
  sweep = load(tmp_path, {"config": MLP, "parameters": {"lr": {"values": [0.1]}}, "seeds": 3},
               {"seed": 5})
  assert [m.seed for m in sweep.members] == [5, 6, 7]
  assert names(sweep) == ["lr=0.1,seed=5", "lr=0.1,seed=6", "lr=0.1,seed=7"]
  assert all(m.overrides["seed"] == m.seed for m in sweep.members)


def test_seed_as_a_parameter(tmp_path):
  sweep = load(tmp_path, {"config": MLP, "parameters": {"seed": {"values": [3, 1]},
                                                         "lr": {"values": [0.1, 0.2]}}})
  assert names(sweep) == ["lr=0.1,seed=3", "lr=0.2,seed=3", "lr=0.1,seed=1", "lr=0.2,seed=1"]
  assert [m.seed for m in sweep.members] == [3, 3, 1, 1]


def test_zip_walks_values_together_as_one_axis_at_its_first_key(tmp_path):
  sweep = load(tmp_path, {
      "config": MLP,
      "parameters": {
          "lr": {"values": [0.1, 0.01]},
          "loss.label_smoothing": {"values": [0.0, 0.1]},
          "schedule.warmup_steps": {"values": [0, 100]},
      },
      "zip": [["schedule.warmup_steps", "lr"]],
  })
  assert names(sweep) == [
      "lr=0.1,label_smoothing=0,warmup_steps=0,seed=0",
      "lr=0.1,label_smoothing=0.1,warmup_steps=0,seed=0",
      "lr=0.01,label_smoothing=0,warmup_steps=100,seed=0",
      "lr=0.01,label_smoothing=0.1,warmup_steps=100,seed=0",
  ]
  assert sweep.definition["zip"] == [["optimizer.learning_rate", "schedule.warmup_steps"]]


RANDOM = {
    "config": MLP,
    "method": "random",
    "count": 40,
    "parameters": {
        "lr": {"distribution": "log_uniform_values", "min": 1e-6, "max": 1e-1},
        "loss.label_smoothing": {"distribution": "uniform", "min": 0.0, "max": 0.2},
        "model.activation": {"values": ["relu", "tanh", "gelu"]},
    },
}


def test_random_is_deterministic_in_its_seed(tmp_path):
  a = load(tmp_path, RANDOM)
  b = load(tmp_path, RANDOM)
  c = load(tmp_path, {**RANDOM, "seed": 1})
  assert a.members == b.members and len(a.members) == 40
  assert [m.overrides for m in a.members] != [m.overrides for m in c.members]
  assert a.definition["seed"] == 0 and c.definition["seed"] == 1
  assert len(set(names(a))) == 40


def test_random_samples_lie_in_bounds_and_log_uniform_spans_the_decades(tmp_path):
  sweep = load(tmp_path, {**RANDOM, "count": 300})
  lrs = [m.overrides["optimizer.learning_rate"] for m in sweep.members]
  smoothing = [m.overrides["loss.label_smoothing"] for m in sweep.members]
  assert all(1e-6 <= v <= 1e-1 for v in lrs)
  assert all(0.0 <= v <= 0.2 for v in smoothing)
  decades = {math.floor(math.log10(v)) for v in lrs}
  assert decades == {-6, -5, -4, -3, -2}  # every order of magnitude drawn
  assert {m.overrides["model.activation"] for m in sweep.members} == {"relu", "tanh", "gelu"}
  assert all(type(v) is float for v in lrs)


def test_int_and_q_uniform(tmp_path):
  sweep = load(tmp_path, {
      "config": MLP,
      "method": "random",
      "count": 100,
      "parameters": {
          "batch_size": {"distribution": "int_uniform", "min": 8, "max": 12},
          "schedule.warmup_steps": {"distribution": "q_uniform", "min": 0, "max": 100, "q": 10},
          "loss.label_smoothing": {"distribution": "q_uniform", "min": 0.0, "max": 0.5,
                                   "q": 0.1},
      },
  })
  batch = [m.overrides["batch_size"] for m in sweep.members]
  warmup = [m.overrides["schedule.warmup_steps"] for m in sweep.members]
  smoothing = [m.overrides["loss.label_smoothing"] for m in sweep.members]
  assert set(batch) == {8, 9, 10, 11, 12} and all(type(v) is int for v in batch)
  assert all(type(v) is int and v % 10 == 0 and 0 <= v <= 100 for v in warmup)
  assert all(abs(v / 0.1 - round(v / 0.1)) < 1e-9 and -1e-9 <= v <= 0.5 + 1e-9
             for v in smoothing)


def test_random_zip_draws_one_index_per_group(tmp_path):
  sweep = load(tmp_path, {
      "config": MLP, "method": "random", "count": 20,
      "parameters": {"lr": {"values": [0.1, 0.01, 0.001]},
                     "schedule.warmup_steps": {"values": [1, 2, 3]}},
      "zip": [["lr", "schedule.warmup_steps"]],
  })
  pairs = {(m.overrides["optimizer.learning_rate"], m.overrides["schedule.warmup_steps"])
           for m in sweep.members}
  assert pairs <= {(0.1, 1), (0.01, 2), (0.001, 3)}
  assert len(set(names(sweep))) == 20  # repeated points get -2, -3, ...


def test_alias_and_string_values_are_stored_canonically(tmp_path):
  sweep = load(tmp_path, {"config": MLP, "parameters": {"lr": {"values": ["3e-4", 1]}}})
  assert [m.overrides["optimizer.learning_rate"] for m in sweep.members] == [3e-4, 1.0]
  assert names(sweep) == ["lr=0.0003,seed=0", "lr=1,seed=0"]
  assert sweep.definition["parameters"] == {"optimizer.learning_rate": {"values": [3e-4, 1.0]}}


def test_global_overrides_reach_member_configs_and_the_definition(tmp_path):
  definition = {"config": MLP, "parameters": {"loss.label_smoothing": {"values": [0.0, 0.1]}}}
  a = load(tmp_path, definition, {"num_steps": 100, "lr": 0.5})
  b = load(tmp_path, definition, ["--config.num_steps=100", "--config.lr=0.5"])
  assert a.definition == b.definition
  assert a.definition["overrides"] == {"num_steps": 100, "optimizer.learning_rate": 0.5}
  assert a.overrides == {"num_steps": 100, "optimizer.learning_rate": 0.5}
  config = spec.member_config(a, a.members[1])
  assert config.num_steps == 100 and config.optimizer.learning_rate == 0.5
  assert config.loss.label_smoothing == 0.1
  assert "num_steps" not in a.members[1].overrides and "steps" not in a.members[1].name
  assert spec.member_config(a, a.members[1], ["num_steps=7"]).num_steps == 7


def test_definition_is_stable_json_and_differences_are_readable(tmp_path):
  definition = {"config": VAE, "parameters": {"loss.beta": {"values": [1.0, 2.0]}}, "seeds": 2}
  a = load(tmp_path, definition)
  b = load(tmp_path, definition)
  assert a.definition == b.definition
  saved = json.loads(json.dumps(a.definition))  # as sweep.json keeps it
  assert spec.definition_differences(saved, b.definition) == []
  assert saved["config"] == VAE and saved["config_resolved"] == VAE
  assert saved["method"] == "grid" and saved["seeds"] == 2 and saved["count"] is None
  changed = load(tmp_path, {**definition, "parameters": {"loss.beta": {"values": [1, 2, 4]}},
                            "seeds": 3})
  assert spec.definition_differences(saved, changed.definition) == [
      "parameters.loss.beta.values: [1.0, 2.0] -> [1.0, 2.0, 4.0]",
      "seeds: 2 -> 3",
  ]
  assert spec.definition_differences({"a": (1, 2)}, {"a": [1, 2], "b": 1}) == [
      "b: (absent) -> 1"]


def test_seed_ensemble():
  sweep = spec.seed_ensemble(MLP, 4, {"seed": 10, "num_steps": 5})
  assert names(sweep) == ["seed=10", "seed=11", "seed=12", "seed=13"]
  assert sweep.name == "mlp" and sweep.file is None
  assert spec.member_config(sweep, sweep.members[2]).num_steps == 5
  assert names(spec.seed_ensemble(MLP, 1)) == ["seed=0"]
  assert spec.seed_ensemble(MLP, 2, name="mine").name == "mine"
  with pytest.raises(ConfigError, match="num_seeds"):
    spec.seed_ensemble(MLP, 0)


def test_make_sweep_from_a_dict_and_a_variant_is_kept():
  sweep = spec.make_sweep({"config": MLP + ":smoke", "parameters": {"lr": {"values": [0.1]}},
                           "seeds": 2}, name="nb")
  assert sweep.name == "nb" and sweep.config == MLP + ":smoke"
  assert spec.member_config(sweep, sweep.members[0]).num_steps == 40


def test_names_fall_back_to_repr_and_full_keys_and_are_folder_safe(tmp_path):
  close = load(tmp_path, {"config": MLP, "parameters": {"lr": {"values": [0.1234561,
                                                                           0.1234562]}}})
  assert names(close) == ["lr=0.1234561,seed=0", "lr=0.1234562,seed=0"]
  shared = load(tmp_path, {"config": MLP, "parameters": {"data.name": {"values": ["digits"]},
                                                         "model.name": {"values": ["a b/c"]}}})
  assert names(shared) == ["data.name=digits,model.name=a_b_c,seed=0"]
  clash = load(tmp_path, {"config": MLP, "parameters": {"data.name": {"values": ["a/b", "a_b"]}}})
  assert len(set(names(clash))) == 2
  long = load(tmp_path, {"config": MLP, "parameters": {
      "model.hidden": {"values": [tuple(range(100)), tuple(range(101)), ()]}}})
  assert [len(n) for n in names(long)][:2] == [120, 120] and names(long)[2] == "hidden=none,seed=0"
  assert names(long)[0] != names(long)[1]
  assert all(set(n) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._=,+-")
             for n in names(long) + names(clash) + names(shared))
  flags = load(tmp_path, {"config": MLP, "parameters": {"optimizer.nesterov": {"values": [
      True, False]}, "optimizer.grad_clip_norm": {"values": [None, 3e-05]}}})
  assert names(flags)[:2] == ["nesterov=True,grad_clip_norm=none,seed=0",
                              "nesterov=True,grad_clip_norm=3e-05,seed=0"]


def test_relative_config_is_found_from_cwd_then_the_sweep_folders_parent_then_its_folder(
    tmp_path, monkeypatch):
  project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
  (project / "configs").mkdir(parents=True)
  (elsewhere / "configs").mkdir(parents=True)
  shutil.copy(MLP, project / "configs" / "mlp.py")
  shutil.copy(MLP, elsewhere / "configs" / "mlp.py")
  path = write_sweep(project / "sweeps", {"config": "configs/mlp.py:smoke", "seeds": 2})
  monkeypatch.chdir(tmp_path)  # no configs/ here: the sweep folder's parent has it
  assert spec.load_sweep(path).config == str(project / "configs" / "mlp.py") + ":smoke"
  monkeypatch.chdir(elsewhere)  # the current folder comes first
  assert spec.load_sweep(path).config == str(elsewhere / "configs" / "mlp.py") + ":smoke"
  shutil.copy(MLP, project / "sweeps" / "base.py")
  beside = write_sweep(project / "sweeps", {"config": "base.py", "seeds": 2}, "beside.py")
  assert spec.load_sweep(beside).config == str(project / "sweeps" / "base.py")


@pytest.mark.parametrize("name, count", [("vae_lr_beta", 18), ("mlp_random", 16),
                                         ("mlp_seeds", 16), ("mlp_hyperband", 27),
                                         ("mlp_pbt", 16), ("mlp_seed_rounds", 9)])
def test_shipped_sweeps_load(name, count, monkeypatch):
  monkeypatch.chdir(ROOT)
  sweep = spec.load_sweep(f"sweeps/{name}.py")
  assert sweep.name == name and len(sweep.members) == count
  assert len(set(names(sweep))) == count
  json.dumps(sweep.definition)


def test_loading_a_sweep_does_not_import_jax():
  code = (f"from gmf_jax.sweep import spec\nspec.load_sweep({str(ROOT / 'sweeps/mlp_random.py')!r})"
          "\nimport sys\nprint('jax' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       check=True)
  assert out.stdout.strip() == "False"


GRID = {"config": MLP, "parameters": {"lr": {"values": [0.1, 0.2]}}}


def _param(**spec_):
  return {**GRID, "parameters": {"lr": spec_}}


def _random(**parameter):
  return {"config": MLP, "method": "random", "count": 4, "parameters": {"lr": parameter}}


@pytest.mark.parametrize("definition, needle", [
    ({**GRID, "paramters": {}}, "Did you mean 'parameters'"),
    ({"parameters": GRID["parameters"]}, "'config' is missing"),
    ({**GRID, "config": "configs/nope.py"}, "configs/nope.py"),
    ({**GRID, "method": "bayes"}, "'bayes'"),
    ({**GRID, "parameters": [1]}, "'parameters' must be a dict"),
    ({**GRID, "parameters": {}}, "nothing to sweep"),
    ({"config": MLP, "parameters": {"lr": {"value": 0.1}}}, "nothing to sweep"),
    ({**GRID, "parameters": {"lr": [0.1]}}, "parameter 'lr' must be a dict"),
    (_param(min=1, max=2), "'lr' needs exactly one of"),
    (_param(values=[1], value=1), "both 'values' and 'value'"),
    (_param(values=[1], vals=[2]), "'vals'"),
    ({**GRID, "parameters": {"optimizer.lerning_rate": {"values": [1]}}},
     "Did you mean 'optimizer.learning_rate'"),
    ({**GRID, "parameters": {"optimizer": {"value": 1}}}, "'optimizer' is a section"),
    (_param(values=[]), "'lr': 'values' is empty"),
    (_param(values=0.1), "'values' must be a list"),
    (_param(values=["abc"]), "'abc' does not fit 'optimizer.learning_rate', which is of type "
                             "float"),
    ({**GRID, "parameters": {"batch_size": {"values": [True]}}}, "which is of type int"),
    ({**GRID, "parameters": {"batch_size": {"values": [1.5]}}}, "which is of type int"),
    (_param(values=[0.1, 0.1]), "twice"),
    (_param(distribution="uniform", min=0, max=1), "'lr' has a distribution"),
    (_random(distribution="normal", min=0, max=1), "unknown distribution 'normal'"),
    (_random(distribution="uniform", max=1), "'lr': distribution 'uniform' needs 'min'"),
    (_random(distribution="uniform", min="a", max=1), "'min' must be a finite number"),
    (_random(distribution="uniform", min=2, max=1), "'lr': 'min' (2) is above 'max' (1)"),
    (_random(distribution="log_uniform_values", min=0, max=1), "'lr': log_uniform_values"),
    ({**_random(), "parameters": {"batch_size": {"distribution": "int_uniform", "min": 1.5,
                                                 "max": 4}}}, "'batch_size': int_uniform"),
    ({**_random(), "parameters": {"batch_size": {"distribution": "uniform", "min": 1,
                                                 "max": 4}}}, "'batch_size' takes an int"),
    (_random(distribution="q_uniform", min=0, max=1, q=0), "'lr': 'q' must be a number > 0"),
    (_random(distribution="uniform", min=0, max=1, q=0.1), "'q' only goes with 'q_uniform'"),
    ({**_random(distribution="uniform", min=0, max=1), "count": None}, "needs 'count'"),
    ({**_random(distribution="uniform", min=0, max=1), "count": 0}, "'count' must be"),
    ({**GRID, "count": 3}, "'count': 3 is for random sweeps"),
    ({**_random(distribution="uniform", min=0, max=1), "seed": "x"}, "'seed' (the random"),
    ({**GRID, "seed": 3}, "'seed': 3 is the random sampler's seed"),
    ({**GRID, "seeds": 0}, "'seeds' must be an integer"),
    ({**GRID, "seeds": 1.5}, "'seeds' must be an integer"),
    ({**GRID, "seeds": True}, "'seeds' must be an integer"),
    ({"config": MLP, "parameters": {"seed": {"values": [0, 1]}}, "seeds": 2},
     "'seed' is also a parameter"),
    ({**GRID, "zip": [["lr", "batch_size"]]}, "zip key 'batch_size' is not in 'parameters'"),
    ({"config": MLP, "parameters": {k: {"values": [1, 2]} for k in ("lr", "batch_size",
                                                                    "num_steps")},
      "zip": [["lr", "batch_size"], ["batch_size", "num_steps"]]},
     "zip key 'batch_size' is in two groups"),
    ({**GRID, "zip": [["lr"]]}, "fewer than 2 keys"),
    ({"config": MLP, "parameters": {"lr": {"values": [1, 2]}, "batch_size": {"values": [1]}},
      "zip": [["lr", "batch_size"]]},
     "different lengths (optimizer.learning_rate: 2, batch_size: 1)"),
    ({"config": MLP, "parameters": {"lr": {"values": [1, 2]}, "batch_size": {"value": 1}},
      "zip": [["lr", "batch_size"]]}, "zip key 'batch_size' has no 'values'"),
    ({**GRID, "zip": "lr"}, "'zip' must be a list"),
    ({"config": MLP, "parameters": {"lr": {"values": [1]},
                                    "optimizer.learning_rate": {"values": [2]}}},
     "both set 'optimizer.learning_rate'"),
    ({"config": MLP, "parameters": {"lr": {"values": [i * 1e-4 for i in range(1, 401)]},
                                    "num_steps": {"values": list(range(1, 301))}}},
     "120,000 members, more than 100,000"),
    ({"config": MLP, "method": "random", "count": 3, "parameters": {"lr": {"value": 1}},
      "seeds": 2}, "nothing to sweep"),
    ({**GRID, "name": "a/b"}, "name 'a/b' must be a folder name"),
    ({**GRID, "description": 3}, "'description' must be a string"),
])
def test_bad_sweeps_fail_with_one_line_naming_the_file_and_key(tmp_path, definition, needle):
  path = write_sweep(tmp_path, definition)
  with pytest.raises(ConfigError) as info:
    spec.load_sweep(path)
  message = str(info.value)
  assert needle in message and path in message and "\n" not in message


@pytest.mark.parametrize("source, needle", [
    ("x = 1\n", "defines no get_sweep()"),
    ("def get_sweep():\n  return [1]\n", "returned a list; it must return a dict"),
    ("def get_sweep():\n  raise KeyError('boom')\n", "raised KeyError"),
    ("import nope_not_a_module\n", "failed to load: ModuleNotFoundError"),
])
def test_bad_sweep_files(tmp_path, source, needle):
  path = tmp_path / "bad.py"
  path.write_text(source)
  with pytest.raises(ConfigError, match=needle) as info:
    spec.load_sweep(str(path))
  assert str(path) in str(info.value)


def test_a_missing_sweep_file(tmp_path):
  with pytest.raises(ConfigError, match="sweep file .*nope.py' does not exist"):
    spec.load_sweep(str(tmp_path / "nope.py"))


@pytest.mark.parametrize("overrides, needle", [
    ({"lr": 0.3}, "override 'optimizer.learning_rate' sets a key the sweep's parameters set"),
    (["--config.num_stepz=3"], "num_stepz"),
    ({"batch_size": "abc"}, "batch_size='abc'"),
])
def test_bad_global_overrides(tmp_path, overrides, needle):
  path = write_sweep(tmp_path, GRID)
  with pytest.raises(ConfigError, match=None) as info:
    spec.load_sweep(path, overrides)
  assert needle in str(info.value) and path in str(info.value)


def test_a_sweep_over_a_named_model_s_own_field(tmp_path):
  """A model named by an override brings its fields as sweepable keys; a typo among them is
  refused with the model's fields listed."""
  (tmp_path / "tiny.py").write_text(
      "import flax.linen as nn\n\n\nclass Tiny(nn.Module):\n  num_classes: int\n"
      "  width: int = 32\n\n  @nn.compact\n  def __call__(self, x, train=False):\n"
      "    return nn.Dense(self.num_classes)(nn.Dense(self.width)(x.reshape((len(x), -1))))\n")
  named = {"model.name": f"{tmp_path / 'tiny.py'}:Tiny"}
  sweep = spec.make_sweep({"config": MLP, "method": "grid",
                      "parameters": {"model.width": {"values": [8, 16]}}}, overrides=named)
  assert [spec.member_config(sweep, m).model.width for m in sweep.members] == [8, 16]
  with pytest.raises(ConfigError, match=r"'model.widht'.*Did you mean 'model.width'.*takes: "
                                        r"num_classes, width"):
    spec.make_sweep({"config": MLP, "method": "grid",
                "parameters": {"model.widht": {"values": [8]}}}, overrides=named)
