"""Load a config file with overrides, without absl flag parsing (works in Colab and Jupyter).

Config files are Python files with `get_config(arg=None) -> ml_collections.ConfigDict`; a variant
is chosen as `path/to/config.py:variant`. The CLI and notebooks both come through `load_config`, so
both get the same parsing and the same errors.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import os
from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

from gmf_jax.errors import ConfigError

Overrides = Mapping[str, Any] | Iterable[str] | None

# Short names for the keys researchers type most. An alias is not a key of its own: it sets the
# canonical key, which is the one config.json records (`--config.lr=3e-4` sets
# optimizer.learning_rate), so the two can never disagree.
ALIASES = {"lr": "optimizer.learning_rate"}

# Sections whose keys are the chosen component's own options (see `_add_component_option`).
COMPONENT_SECTIONS = ("model", "data", "loss")


@dataclasses.dataclass(frozen=True)
class ConfigOrigin:
  """Where a loaded config's values came from: its file, and the overrides applied on top.

  Build time uses it to tell a key the user chose from one the file set for a component the
  user then switched away from (`--config.schedule.name=constant` on a file that set
  `schedule.end_value` for its cosine schedule): the first must take effect or be refused, the
  second is simply left out.
  """

  file: str | None = None
  file_values: Mapping[str, Any] | None = None  # dotted keys as get_config() returned them
  overridden: frozenset[str] = frozenset()  # canonical dotted keys set by overrides

  def set_by_user(self, key: str, value: Any) -> bool:
    """Whether `value` at `key` is the user's choice rather than what the file set.

    Without a file (a config built in Python), every value counts as the user's.
    """
    if self.file_values is None or key in self.overridden or key not in self.file_values:
      return True
    return not same_value(self.file_values[key], value)

  def file_value(self, key: str, default: Any = None) -> Any:
    return default if self.file_values is None else self.file_values.get(key, default)


class LoadedConfig(ml_collections.ConfigDict):
  """What `load_config` returns: a ConfigDict that remembers its file and its origin
  (`config_origin`), also in its copies (`copy.deepcopy`, pickle, `copy_and_resolve_references`),
  so a sweep that copies a loaded config per trial keeps the rules that need them.

  A ConfigDict made otherwise (a config file's `get_config()` called directly, or
  `ConfigDict(dict)`) has no origin: every value in it counts as the user's choice.
  """

  _KEPT = ("_gmf_origin", "_gmf_config_source")

  def __getstate__(self):
    return super().__getstate__(), {k: self.__dict__[k] for k in self._KEPT if k in self.__dict__}

  def __setstate__(self, state):
    fields, kept = state
    super().__setstate__(fields)
    for key, value in kept.items():
      object.__setattr__(self, key, value)

  def copy_and_resolve_references(self, visit_map=None):
    copied = super().copy_and_resolve_references(visit_map)
    for key in self._KEPT:
      if key in self.__dict__:
        object.__setattr__(copied, key, self.__dict__[key])
    return copied


def config_origin(config: ml_collections.ConfigDict) -> ConfigOrigin:
  """The origin `load_config` recorded for `config` (an empty one for configs made in Python)."""
  return getattr(config, "_gmf_origin", None) or ConfigOrigin()


def same_value(a: Any, b: Any) -> bool:
  """Equality that treats lists and tuples alike (JSON and CLI parsing return either)."""
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return tuple(a) == tuple(b)
  return a == b


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """`{"a": {"b": 1}}` -> `{"a.b": 1}` (ConfigDicts and dicts)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def default_config() -> ml_collections.ConfigDict:
  """The shared vocabulary every config starts from; config files change what they need.

  Keys that only some components use are typed placeholders (None until set), so an override
  from the command line is type-checked even where the default is None. `lr` is an alias of
  `optimizer.learning_rate` (see ALIASES).
  """
  c = ml_collections.ConfigDict()
  c.name = "run"  # names the run folder under runs/
  c.seed = 0  # every random key of the run is derived from this
  # The data order's seed; None: the seed's. Members of an ensemble that share it see the same
  # batches in the same order (a paired design).
  c.data_seed = config_dict.placeholder(int)
  # > 1: a seed ensemble of seeds seed, seed+1, ... trained together in one vmapped program
  # (python -m gmf_jax.main --config.num_seeds=16); every member is a run folder of its own.
  c.num_seeds = 1
  c.num_steps = 1000
  c.num_epochs = config_dict.placeholder(int)  # if set, num_steps = num_epochs * steps/epoch
  c.batch_size = 128
  c.eval_batch_size = 500
  c.steps_per_call = 100  # optimizer steps fused into one jitted call (lax.scan)
  c.log_every_steps = 100  # train metrics are averaged over this many steps
  c.eval_every_steps = 1000  # plus always at the end
  c.progress_bar = True
  # What to do when the loss or gradient norm is NaN/Inf: 'stop' (status failed, checkpoints
  # intact) or 'skip' the update (optax.apply_if_finite) and stop after too many in a row.
  c.on_nonfinite = "stop"
  c.max_consecutive_nonfinite = 10

  # Diagnostics by name, e.g. c.diagnostics.jacobian = dict(every_steps=2000); see
  # gmf_jax/diagnostics/__init__.py. They run on a fixed probe: the first probe_size test examples.
  c.diagnostics = ml_collections.ConfigDict()
  c.probe_size = 256
  # Data hyperparameters set to new values at given steps, e.g.
  # c.piecewise.optimizer.learning_rate = dict(steps=[500], values=[0.1, 0.01]); see
  # gmf_jax/train/piecewise.py.
  c.piecewise = ml_collections.ConfigDict()

  c.checkpoint = ml_collections.ConfigDict(
      {
          "every_steps": 5000,  # also at the end and on preemption; 0: only those
          "max_to_keep": 3,  # latest checkpoints kept
          "best_metric": "eval/loss",  # the best step by this eval metric is kept too
          "best_mode": "auto",  # 'min' | 'max' | 'auto' (max for accuracies, else min)
          "async_save": True,  # write in the background while training goes on
      }
  )
  # JAX's persistent compilation cache: a rerun of a config (other seeds, sweeps) loads the
  # compiled programs instead of compiling them again. 'auto': $GMF_JAX_COMPILE_CACHE_DIR, else
  # ~/.cache/gmf_jax/jax/<cpu type>; '' turns it off. See gmf_jax/compile_cache.py.
  c.compile_cache = ml_collections.ConfigDict({"dir": "auto", "max_size_mb": 2048})
  # The devices: `data` of them split every batch (data parallelism; 0: every visible device
  # that `members` leaves), and `members` of them split a population's members (seeds, sweep
  # points; 0: as many as divide the population, 1 for a single run). Parameters and optimizer
  # state are replicated along `data`; `model` devices split the parameters of wide layers
  # (FSDP-style). One device: no mesh. See gmf_jax/train/mesh.py.
  c.mesh = ml_collections.ConfigDict({"data": 0, "members": 0, "model": 1})
  # Several processes (hosts) in one run: see gmf_jax/gmf_jax/distributed.py. 'auto' starts
  # jax.distributed inside a multi-task Slurm step (srun), with JAX_COORDINATOR_ADDRESS +
  # JAX_NUM_PROCESSES + JAX_PROCESS_ID, or with num_processes > 1 set here.
  c.distributed = ml_collections.ConfigDict(
      {
          "enabled": "auto",  # 'auto' | 'yes' | 'no'
          "coordinator_address": "",  # host:port of process 0 ('' : from the environment)
          "num_processes": 0,  # 0: from the environment
          "process_id": -1,  # -1: from the environment
      }
  )
  c.wandb = ml_collections.ConfigDict(
      {
          "mode": "offline",  # 'offline' | 'online' | 'disabled'; WANDB_MODE overrides it
          "project": "gmf_jax",
          "entity": config_dict.placeholder(str),
          "group": config_dict.placeholder(str),
          "name": config_dict.placeholder(str),  # default: the run folder's name
          "tags": (),
          "notes": config_dict.placeholder(str),
          "init_timeout": 30.0,  # seconds to reach the server before falling back to offline
      }
  )

  c.model = ml_collections.ConfigDict({"name": "mlp_classifier"})
  c.data = ml_collections.ConfigDict(
      {
          "name": "digits",
          "on_device": "auto",  # 'auto' | 'yes' | 'no': keep the train split on the device
          "max_device_bytes": 2**30,  # 'auto' keeps datasets up to this size on the device
          "binarize": False,  # threshold pixel values at 0.5 (for Bernoulli likelihoods)
          # Streamed data (not on the device) is read by grain: `workers` processes (-1: none
          # for arrays in memory, up to 4 for files such as tfds), each `prefetch` blocks of
          # steps_per_call batches ahead.
          "workers": -1,
          "prefetch": 2,
          # Augmentation inside the jitted train step (see gmf_jax/train/augment.py): random
          # crops of the image padded by `crop_padding` pixels (0: off), horizontal flips,
          # additive Gaussian noise (0: off), and a user's pure `fn(rng, batch) -> batch`
          # named 'pkg.module:fn' ('' : none).
          "augment": ml_collections.ConfigDict(
              {"crop_padding": 0, "flip": False, "noise_std": 0.0, "fn": ""}),
      }
  )
  c.loss = ml_collections.ConfigDict({"name": "cross_entropy"})
  c.optimizer = ml_collections.ConfigDict(
      {
          "name": "adam",
          "learning_rate": 1e-3,  # peak value when a schedule is used
          "weight_decay": 0.0,  # decoupled (adamw) or L2 added to the gradient (others)
          "grad_clip_norm": config_dict.placeholder(float),  # clip by global norm if set
          "momentum": config_dict.placeholder(float),  # sgd, rmsprop
          "nesterov": False,  # sgd
          "b1": 0.9,  # adam, adamw
          "b2": 0.999,  # adam, adamw
          "eps": 1e-8,
          "decay": 0.9,  # rmsprop
          # k micro-batches of batch_size / k make one optimizer step (gradient accumulation)
          "accumulate_steps": 1,
      }
  )
  c.schedule = ml_collections.ConfigDict(
      {
          "name": "constant",
          "warmup_steps": 0,  # linear warmup from 0, for every schedule
          "decay_steps": config_dict.placeholder(int),  # cosine: default num_steps - warmup
          "end_value": 0.0,  # cosine: final learning rate as a fraction of the peak
          "decay_rate": 0.1,  # exponential: factor per transition_steps; step: per boundary
          "transition_steps": config_dict.placeholder(int),  # exponential
          "boundaries": (),  # step: the steps at which the rate is multiplied by decay_rate
      }
  )
  # The dtype the model computes in: 'float32' | 'bfloat16' | 'float16' (with dynamic loss
  # scaling). Parameters and optimizer state stay float32. See gmf_jax/train/precision.py.
  c.precision = ml_collections.ConfigDict({"compute": "float32"})
  # Averaged weights: an exponential moving average of the parameters (and BatchNorm
  # statistics) with this decay (None: off); evaluation runs on the 'live' weights, the 'ema'
  # ones (eval/ema/<metric>) or 'both'.
  c.ema = ml_collections.ConfigDict(
      {"decay": config_dict.placeholder(float), "evaluate": "live"})
  return c


def setting(config: Mapping[str, Any], key: str) -> Any:
  """The value at dotted `key`, or the default config's where `config` lacks it (a config file
  that replaced a whole section, or a config saved by an older gmf_jax)."""
  node = config
  for part in key.split("."):
    if not isinstance(node, (Mapping, ml_collections.ConfigDict)) or part not in node:
      node = default_config()
      for step in key.split("."):
        node = node[step]
      return node
    node = node[part]
  return node


def load_config(path: str, overrides: Overrides = None) -> ml_collections.ConfigDict:
  """Loads `path` (`file.py` or `file.py:variant`), locks it, and applies `overrides`.

  Args:
    path: a Python config file with `get_config(arg=None)`; `:variant` is passed as `arg`.
    overrides: `{"optimizer.learning_rate": 1e-3}`, or CLI strings like
      `["--config.optimizer.learning_rate=1e-3"]` (also `"optimizer.learning_rate=1e-3"`);
      `lr` is an alias of `optimizer.learning_rate`.

  Returns:
    The locked config (a `LoadedConfig`): a typo in a key now fails instead of adding a key.

  Raises:
    ConfigError: a missing file, a typo in a key, a value of the wrong type.
  """
  file_path, arg = path, ""
  if not os.path.isfile(path) and ":" in path:
    file_path, _, arg = path.rpartition(":")
  if not os.path.isfile(file_path):
    raise ConfigError(f"config file {file_path!r} does not exist (cwd: {os.getcwd()}).")
  module = _load_module(file_path)
  get_config = getattr(module, "get_config", None)
  if get_config is None:
    raise ConfigError(f"config file {file_path!r} defines no get_config(arg=None) function.")
  try:
    config = get_config(arg) if arg else get_config()
  except ConfigError:
    raise
  except (TypeError, ValueError, KeyError) as e:
    raise ConfigError(f"config file {file_path!r} rejected variant {arg!r}: {e}") from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"get_config() in {file_path!r} must return an ml_collections.ConfigDict.")
  config = LoadedConfig(config)  # the same fields (and their types), able to keep its origin
  config.lock()
  file_values = flatten(config)
  overridden = apply_overrides(config, overrides)
  # Remembered beside the config (not keys: they do not change the run): the file, so the run
  # folder can keep a copy of it, and what the file and the overrides each set.
  object.__setattr__(config, "_gmf_config_source", (os.path.abspath(file_path), arg or None))
  object.__setattr__(config, "_gmf_origin",
                     ConfigOrigin(file_path, file_values, frozenset(overridden)))
  return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: Overrides) -> list[str]:
  """Applies overrides in place; strings are parsed by the type of the field they replace.

  Returns:
    The canonical keys set (aliases resolved).
  """
  if overrides is None:
    return []
  items = list(overrides.items() if isinstance(overrides, Mapping) else _parse_cli(overrides))
  # A component's name first: its options are the keys of its section (`model.name=file.py:
  # TinyMLP` makes `model.width` a key), whatever the order they were given in.
  items.sort(key=lambda item: not _is_component_name(item[0]))
  return [set_value(config, key, value) for key, value in items]


def _is_component_name(key: str) -> bool:
  section, _, leaf = key.partition(".")
  return leaf == "name" and section in COMPONENT_SECTIONS


def canonical_key(config: ml_collections.ConfigDict, key: str) -> str:
  """`key` with an alias resolved (`lr` -> `optimizer.learning_rate`), unless the config has a
  key of that name itself."""
  if key in ALIASES and key not in config:
    return ALIASES[key]
  return key


def set_value(config: ml_collections.ConfigDict, key: str, value: Any) -> str:
  """Sets dotted `key` (or an alias) to `value`; a string is parsed by the field's type.

  Returns:
    The canonical key that was set.

  Raises:
    ConfigError: an unknown key or a value of the wrong type.
  """
  key = canonical_key(config, key)
  node, leaf = _section(config, key)
  field_type = node.get_type(leaf)
  if isinstance(value, str) and field_type is not str:
    value = _parse_value(value, field_type, key)
  if isinstance(value, list):
    value = tuple(value)
  try:
    setattr(node, leaf, value)
  except TypeError as e:
    raise ConfigError(
        f"override {key}={value!r}: expected a value of type {field_type.__name__}."
    ) from e
  return key


def ensure_key(config: ml_collections.ConfigDict, key: str) -> None:
  """Makes sure dotted `key` (or an alias) is in `config`: a key there is left alone, an option
  of the component its section names is added at its default (see `_add_component_option`).

  Raises:
    ConfigError: `key` is neither (the unknown-key message, with hints).
  """
  _section(config, canonical_key(config, key))


def _section(config: ml_collections.ConfigDict, key: str
             ) -> tuple[ml_collections.ConfigDict, str]:
  """The section holding canonical `key`, and the key's last part, which `ensure_key` made sure
  is in it."""
  *parents, leaf = key.split(".")
  node = config
  for i, part in enumerate(parents):
    node = _child(node, part, ".".join(parents[: i + 1]), key)
  if not isinstance(node, ml_collections.ConfigDict):
    raise ConfigError(f"override {key!r}: {'.'.join(parents)!r} is a value, not a section.")
  if leaf not in node:
    _add_component_option(node, parents, leaf, key)
  return node, leaf


def _add_component_option(node: ml_collections.ConfigDict, parents: list[str], leaf: str,
                          key: str) -> None:
  """Adds `leaf` to a component's section when the chosen component takes it, at its default
  (typed by it, or by the option's annotation); raises the unknown-key error otherwise.

  The keys of `model`, `data` and `loss` are the chosen component's options: a built-in's, or
  a user's Module fields and loader arguments. The config file lists those of the component it
  chose; a component named by an override brings its own.
  """
  from gmf_jax.registry import NO_DEFAULT, component_options

  section = parents[0] if len(parents) == 1 else None
  options = component_options(section, node.get("name")) if section else None
  if options is None:
    raise ConfigError(_unknown_key(node, leaf, key))
  if leaf not in options:
    close = difflib.get_close_matches(leaf, [*options, *node.keys()], n=1)
    hint = f" Did you mean '{section}.{close[0]}'?" if close else ""
    raise ConfigError(
        f"unknown config key {key!r}.{hint} {section}.name={node.get('name')!r} takes: "
        f"{', '.join(sorted(options)) or '(no options)'}; other keys here: "
        f"{', '.join(sorted(k for k in node.keys() if k not in options))}.")
  default, annotation = options[leaf]
  with node.unlocked():
    if default is not NO_DEFAULT and default is not None:
      node[leaf] = tuple(default) if isinstance(default, list) else default
    else:
      kind = _simple_type(annotation)
      node[leaf] = config_dict.placeholder(kind) if kind else None


def _simple_type(annotation: Any) -> type | None:
  """int, float, bool, str or tuple for an annotation such as `int`, `int | None` or
  `tuple[int, ...]`; None for anything else (the value is then read as a Python literal)."""
  import typing

  simple = (bool, int, float, str, tuple)
  if annotation in simple:
    return annotation
  if typing.get_origin(annotation) in simple:
    return typing.get_origin(annotation)
  args = [a for a in typing.get_args(annotation) if a is not type(None)]
  if len(args) == 1:
    return _simple_type(args[0])
  return None


def _child(node, part, path, full_key):
  if not isinstance(node, ml_collections.ConfigDict) or part not in node:
    raise ConfigError(_unknown_key(node, part, full_key, section=path))
  return node[part]


def _unknown_key(node, part, full_key, section=None) -> str:
  keys = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
  close = difflib.get_close_matches(part, keys, n=1)
  hint = f" Did you mean {full_key.rsplit(part, 1)[0] + close[0]!r}?" if close else ""
  aliases = f" Aliases: {', '.join(f'{a} ({k})' for a, k in ALIASES.items())}." if (
      section is None and "." not in full_key) else ""
  return (
      f"unknown config key {full_key!r}.{hint} Keys here: {', '.join(keys)}.{aliases} "
      "(The config is locked: a new key must be added in the config file.)"
  )


def _parse_value(text: str, field_type: type, key: str) -> Any:
  stripped = text.strip()
  if stripped.lower() == "none":
    return None
  try:
    if field_type is bool:
      lowered = stripped.lower()
      if lowered in ("true", "1", "yes", "y", "on"):
        return True
      if lowered in ("false", "0", "no", "n", "off"):
        return False
      raise ValueError(text)
    if field_type is int:
      number = float(stripped) if any(ch in stripped for ch in ".eE") else int(stripped)
      if isinstance(number, float) and not number.is_integer():
        raise ValueError(text)
      return int(number)
    if field_type is float:
      return float(stripped)
    if field_type in (tuple, list):
      parsed = ast.literal_eval(stripped) if stripped else ()
      if isinstance(parsed, (int, float, str)):
        parsed = (parsed,)
      if not isinstance(parsed, (tuple, list)):
        raise ValueError(text)
      return tuple(parsed)
    if field_type is type(None):
      return ast.literal_eval(stripped)
  except (ValueError, SyntaxError):
    raise ConfigError(
        f"override {key}={text!r}: cannot read {text!r} as {field_type.__name__}."
    ) from None
  raise ConfigError(f"override {key}={text!r}: a {field_type.__name__} cannot be set from text.")


def _parse_cli(args: Iterable[str]):
  for arg in args:
    text = arg[len("--config.") :] if arg.startswith("--config.") else arg
    key, sep, value = text.partition("=")
    if not sep or not key:
      raise ConfigError(f"override {arg!r} must look like --config.key=value.")
    yield key, value


def _load_module(file_path: str):
  spec = importlib.util.spec_from_file_location("gmf_jax_config", os.path.abspath(file_path))
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # a broken config file: name it, keep the cause
    raise ConfigError(f"config file {file_path!r} failed to load: {type(e).__name__}: {e}") from e
  return module
