"""Sweep files: load one, check it against its base config, and expand it into members.

A sweep file is a Python file with `get_sweep() -> dict`, in the vocabulary of W&B sweep
configs plus `seeds`, `zip` and `config`:

    def get_sweep():
      return {
          "config": "configs/vae.py",          # the base config; "configs/vae.py:smoke": a variant
          "method": "grid",                    # "grid" (the default) | "random"
          "parameters": {
              "lr": {"values": [1e-3, 3e-4]},  # `lr` is an alias of optimizer.learning_rate
              "loss.beta": {"values": [0.5, 1.0, 2.0]},
              "model.hidden": {"value": (64,)},  # a constant, set in every member
          },
          "seeds": 3,                          # every point over seeds base..base+2
      }

Seeds until the interval is narrow: `"seeds": {"min": 3, "max": 20, "until": {"ci_half_width":
0.01}}` with the sweep's `metric`; the members are then round 0's (`min` seeds per point) and
`python -m gmf_jax.sweep` adds seeds in rounds (see `gmf_jax.sweep.seed_rounds`).

Early termination: `metric` ({"name": "eval/loss", "goal": "minimize"}) and `early_terminate`
({"type": "hyperband", "min_iter": 1000, "eta": 3} or {"type": "median", "min_iter": 1000});
see `gmf_jax.sweep.early_stop` for the rules.

Other keys: `name` (default: the file's stem), `description`, `count` and `seed` (random only: how
many points, and the sampler's seed, default 0), `zip` (lists of parameters whose `values` are
walked together instead of crossed). A random sweep also takes distributions:
`{"distribution": "uniform" | "log_uniform_values" | "int_uniform" | "q_uniform", "min": a,
"max": b}` (`q`, default 1, for q_uniform).

Rules, all checked before any member runs (each failure is one ConfigError line):

- A relative `config` path is looked up from the current folder first, then from the sweep
  file's folder's parent (the repo root for `sweeps/x.py`), then from the sweep file's folder.
- Parameter keys are config keys or aliases; members store the canonical keys, and every value is
  checked against (and stored as) the type of its config field.
- Members are ordered point by point. Grid: itertools.product over the parameters in their
  order, a zipped group counting as one axis at the position of its first key. Random: `count`
  points drawn from `numpy.random.default_rng(seed)`, point by point, each point drawing its
  parameters in their order (a zipped group draws one index, at its first key). Seeds are
  innermost: with `seeds: N` each point runs with seeds base..base+N-1, `base` being the base
  config's `seed` after the global overrides.
- Member names (folder names) list the swept parameters in order, then `seed=K`, e.g.
  `lr=0.0003,beta=2,seed=1`; see `member_names`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import importlib.util
import itertools
import math
import numbers
import os
import re
from collections.abc import Mapping
from typing import Any

import ml_collections

from gmf_jax import config as config_lib
from gmf_jax.errors import ConfigError
from gmf_jax.sweep import early_stop
from gmf_jax.sweep import seed_rounds as rounds_lib

MAX_MEMBERS = 100_000
MAX_NAME_LENGTH = 120
METHODS = ("grid", "random")
DISTRIBUTIONS = ("uniform", "log_uniform_values", "int_uniform", "q_uniform")
TOP_LEVEL_KEYS = ("name", "config", "method", "parameters", "count", "seed", "seeds", "zip",
                  "description", "metric", "early_terminate", "pbt")
PARAMETER_FIELDS = ("values", "value", "distribution", "min", "max", "q")

_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
_MISSING = object()


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of a sweep."""

  name: str  # folder name from its overrides, e.g. "lr=0.0003,beta=2,seed=1"
  overrides: dict[str, Any]  # canonical config key -> value; always includes "seed"
  seed: int
  round: int = 0  # the seed round that planned it (see gmf_jax.sweep.seed_rounds)


@dataclasses.dataclass(frozen=True)
class Sweep:
  """An expanded sweep: its base config, its members, and the definition they came from."""

  name: str
  file: str | None  # absolute path of the sweep file (None when built from a dict)
  config: str  # the base config path, absolute, with ":variant" kept if given
  definition: dict  # normalized and JSON-able: what sweep.json stores, what a rerun compares
  members: tuple[Member, ...]
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # global, canonical
  metric: early_stop.Metric | None = None  # what members are judged by
  early_terminate: early_stop.Rule | None = None  # see gmf_jax.sweep.early_stop
  pbt: Any = None  # gmf_jax.sweep.pbt.Pbt
  seed_rounds: rounds_lib.SeedRounds | None = None  # "seeds": {"min", "max", "until"}
  points: tuple[rounds_lib.Point, ...] = ()  # with seed_rounds: each point's possible seeds


def load_sweep(path: str, overrides: config_lib.Overrides = None) -> Sweep:
  """Loads a sweep file, checks it against its base config, and expands it into members.

  Args:
    path: a Python file with `get_sweep() -> dict`.
    overrides: applied to every member, as `load_config` takes them (`{"num_steps": 100}` or
      `["--config.num_steps=100"]`); they may not set a key the sweep's parameters set.

  Returns:
    The Sweep, members in order.

  Raises:
    ConfigError: one clear line for every bad input, before anything runs.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ConfigError(f"sweep file {path!r} does not exist (cwd: {os.getcwd()}).")
  get_sweep = getattr(_load_module(path), "get_sweep", None)
  if not callable(get_sweep):
    raise ConfigError(f"sweep file {path!r} defines no get_sweep() function; add one that "
                      "returns the sweep as a dict.")
  try:
    definition = get_sweep()
  except ConfigError:
    raise
  except Exception as e:  # the user's code: name it, keep the cause
    raise ConfigError(_one_line(
        f"get_sweep() in {path!r} raised {type(e).__name__}: {e}")) from e
  if not isinstance(definition, Mapping):
    raise ConfigError(f"get_sweep() in {path!r} returned a {type(definition).__name__}; it must "
                      "return a dict.")
  return _build(definition, overrides, file=path, name=None, label=path)


def make_sweep(definition: Mapping[str, Any], overrides: config_lib.Overrides = None, *,
               file: str | None = None, name: str | None = None) -> Sweep:
  """`load_sweep` for a dict (what `get_sweep()` returns), e.g. from a notebook.

  Args:
    definition: the sweep, as a sweep file's `get_sweep()` returns it.
    overrides: applied to every member (see `load_sweep`).
    file: the file it came from, if any: names the sweep in errors, gives the default name and
      the folders a relative `config` is looked up in.
    name: the sweep's name; default: `definition["name"]`, else the file's stem, else the base
      config's `name`.
  """
  if not isinstance(definition, Mapping):
    raise ConfigError(f"a sweep definition must be a dict, got a {type(definition).__name__}.")
  label = file if file is not None else str(name or definition.get("name") or "(a dict)")
  return _build(definition, overrides, file=file, name=name, label=label)


def seed_ensemble(config_path: str, num_seeds: int, overrides: config_lib.Overrides = None,
                  name: str | None = None) -> Sweep:
  """`num_seeds` seeds of one config: members seed=base..base+num_seeds-1, named "seed=K".

  This is what `--config.num_seeds=N` on gmf_jax.main means. `base` is the config's seed after
  `overrides`; the name defaults to the config's `name`.
  """
  if not _is_int(num_seeds) or num_seeds < 1:
    raise ConfigError(f"num_seeds must be an integer >= 1, got {num_seeds!r}.")
  return _build({"config": config_path, "seeds": num_seeds}, overrides, file=None, name=name,
                label=f"seed ensemble of {config_path!r}", allow_single=True)


def member_config(sweep: Sweep, member: Member,
                  overrides: config_lib.Overrides = None) -> ml_collections.ConfigDict:
  """The member's config: the base config with the sweep's global overrides, then the member's.

  `overrides`, if given, are applied last (e.g. fewer steps for a quick look).
  """
  extra = _canonical_overrides(sweep.config, overrides, label=sweep.name)[1] if overrides else {}
  return config_lib.load_config(sweep.config, {**sweep.overrides, **member.overrides, **extra})


def definition_differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
  """What changed between two definitions, one line per value: "path: old -> new".

  Lists and tuples count as alike, so a definition read back from JSON equals the one it was
  written from. Empty when the two are equal.
  """
  lines: list[str] = []
  _diff(_plain_tree(saved), _plain_tree(now), "", lines)
  return lines


def member_names(rows: list[dict[str, Any]]) -> list[str]:
  """Unique folder names for members, from the values each sets (keys in order, seed last).

  A key is shown by its short name: the alias (`optimizer.learning_rate` -> `lr`), else its last
  dotted component (`loss.beta` -> `beta`), or the full key where two keys would share one.
  Values: floats as `{:g}` (`repr` for a key where that would merge distinct values), tuples
  joined with "x" (`()` and None as `none`). Characters outside `[A-Za-z0-9._=,+-]` become `_`;
  a name that still repeats (case-insensitively) gets `-2`, `-3`, ...; one over 120 characters
  is cut and ends in `-` + 8 hex digits of the full name's sha1.
  """
  keys = list(rows[0]) if rows else []
  labels = _short_names(keys)
  texts = {key: _value_texts([row[key] for row in rows]) for key in keys}
  raw = [",".join(f"{labels[key]}={texts[key][i]}" for key in keys) for i in range(len(rows))]
  seen: set[str] = set()
  names = []
  for name in raw:
    name = _UNSAFE.sub("_", name)
    unique, n = name, 1
    while unique.lower() in seen:
      n += 1
      unique = f"{name}-{n}"
    seen.add(unique.lower())
    names.append(_shorten(unique))
  return names


# The build, step by step.


@dataclasses.dataclass(frozen=True)
class _Param:
  key: str  # canonical
  kind: str  # "values" | "value" | "distribution"
  values: tuple = ()  # "values": as the config stores them
  value: Any = None  # "value"
  distribution: tuple = ()  # (name, min, max, q)

  @property
  def swept(self) -> bool:
    return self.kind != "value"


def _build(raw: Mapping[str, Any], overrides, *, file: str | None, name: str | None, label: str,
           allow_single: bool = False) -> Sweep:
  fail = lambda msg: ConfigError(_one_line(f"sweep {label}: {msg}"))
  for key in raw:
    if key not in TOP_LEVEL_KEYS:
      close = difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise fail(f"unknown key {key!r}.{hint} A sweep has: {', '.join(TOP_LEVEL_KEYS)}.")
  file = os.path.abspath(file) if file is not None else None

  given_config = raw.get("config")
  if not isinstance(given_config, str) or not given_config:
    raise fail("'config' is missing: name the base config file, e.g. "
               "\"config\": \"configs/mlp.py\".")
  config_path = _resolve_config(given_config, file, fail)
  base, global_overrides = _canonical_overrides(config_path, overrides, label)
  base_seed = _get(base, "seed")
  if not _is_int(base_seed):
    raise fail(f"the base config's 'seed' must be an int, got {base_seed!r}.")

  metric, rule = early_stop.parse(raw, fail)
  rounds = rounds_lib.parse(raw, metric, fail)
  method = raw.get("method", "grid")
  if method not in METHODS:
    raise fail(f"unknown method {method!r}; choose 'grid' or 'random'.")
  count, sampler_seed, seeds = _check_counts(raw, method, fail)
  from gmf_jax.sweep import pbt as pbt_lib

  # The exploits' random choices: the sampler's seed (random), else the base config's seed.
  pbt = pbt_lib.parse(raw, metric, base, fail,
                      sampler_seed if sampler_seed is not None else int(base_seed))
  params = _check_parameters(raw.get("parameters", {}), base, method, fail)
  groups = _check_zip(raw.get("zip", []), params, base, fail)

  param_keys = [p.key for p in params]
  if "seed" in param_keys and seeds > 1:
    raise fail(f"'seeds': {raw['seeds']!r} repeats every point over seeds, but 'seed' is also "
               "a parameter; drop one of them.")
  for key in global_overrides:
    if key in param_keys:
      raise fail(f"override {key!r} sets a key the sweep's parameters set too; drop it from the "
                 "overrides or from 'parameters'.")
  swept = [p for p in params if p.swept]
  if not swept and not allow_single and (method == "random" or seeds == 1):
    raise fail("nothing to sweep: give a parameter with 'values' (or, for a random sweep, a "
               "distribution), or 'seeds' > 1 (with method 'grid').")

  if method == "grid":
    axes = _grid_axes(swept, groups)
    size = math.prod(len(axis) for axis in axes) * seeds
  else:
    size = count * seeds
  if size > MAX_MEMBERS:
    raise fail(f"would make {size:,} members, more than {MAX_MEMBERS:,}; sweep fewer values "
               "(or fewer seeds), or split it into several sweeps.")
  if method == "grid":
    merged = (dict(itertools.chain.from_iterable(a.items() for a in combo))
              for combo in itertools.product(*axes))
    points = [{p.key: point[p.key] for p in swept} for point in merged]  # parameter order
  else:
    points = _sample_points(swept, groups, count, sampler_seed, base, fail)

  members = _members(points, params, seeds, base_seed)  # with seed rounds: `max` seeds each
  rounded: tuple[rounds_lib.Point, ...] = ()
  if rounds is not None:  # a point's label: its member names less the seed ("base": no keys)
    rounded = tuple(rounds_lib.Point(label or "base", tuple(members[i * seeds:(i + 1) * seeds]))
                    for i, label in enumerate(member_names(points)))
    members = [m for p in rounded for m in p.members[:rounds.min]]  # round 0
  if name is None:
    name = raw.get("name")
  if name is None:
    config_name = _get(base, "name")
    name = (os.path.splitext(os.path.basename(file))[0] if file
            else _UNSAFE.sub("_", config_name) if isinstance(config_name, str) and config_name
            else "sweep")
  if not isinstance(name, str) or not name or _UNSAFE.search(name) or name in (".", ".."):
    raise fail(f"name {name!r} must be a folder name: letters, digits and ._=,+- only.")
  description = raw.get("description")
  if description is not None and not isinstance(description, str):
    raise fail(f"'description' must be a string, got {description!r}.")

  definition = {
      "name": name,
      "description": description,
      "config": given_config,
      "config_resolved": config_path,
      "method": method,
      "parameters": {p.key: _param_definition(p) for p in params},
      "count": count,
      "seed": sampler_seed,
      "seeds": rounds.definition() if rounds is not None else seeds,
      "zip": [list(group) for group in groups],
      "overrides": {key: _plain_tree(value) for key, value in global_overrides.items()},
      **early_stop.definition(metric, rule),
      **pbt_lib.definition(pbt),
  }
  return Sweep(name=name, file=file, config=config_path, definition=definition,
               members=tuple(members), overrides=global_overrides, metric=metric,
               early_terminate=rule, pbt=pbt, seed_rounds=rounds, points=rounded)


def _resolve_config(given: str, file: str | None, fail) -> str:
  """The base config's absolute path (":variant" kept): cwd, then the sweep file's folder's
  parent, then the sweep file's folder."""
  if os.path.isabs(given):
    bases = [""]
  else:
    bases = [os.getcwd()]
    if file is not None:
      bases += [os.path.dirname(os.path.dirname(file)), os.path.dirname(file)]
  file_part, sep, variant = given.rpartition(":")
  for base in dict.fromkeys(bases):
    if os.path.isfile(os.path.join(base, given)):
      return os.path.abspath(os.path.join(base, given))
    if sep and file_part and os.path.isfile(os.path.join(base, file_part)):
      path = os.path.abspath(os.path.join(base, file_part))
      return f"{path}:{variant}" if variant else path
  looked = ", ".join(dict.fromkeys(bases)) if bases != [""] else "an absolute path"
  raise fail(f"config {given!r} not found (looked in: {looked}); fix the 'config' path "
             "(relative paths are tried from the current folder, then the sweep file's "
             "folder's parent, then its folder).")


def _canonical_overrides(config_path: str, overrides, label: str):
  """Loads the base config with `overrides`; returns it and {canonical key: value as set}."""
  if isinstance(overrides, str):
    overrides = [overrides]
  elif overrides is not None and not isinstance(overrides, Mapping):
    overrides = list(overrides)
  try:
    config = config_lib.load_config(config_path)
    keys = config_lib.apply_overrides(config, overrides)
  except ConfigError as e:
    raise ConfigError(_one_line(f"sweep {label}: {e}")) from None
  return config, {key: _get(config, key) for key in keys}


def _check_counts(raw, method: str, fail) -> tuple[int | None, int | None, int]:
  count, seed = raw.get("count"), raw.get("seed")
  if method == "random":
    if count is None:
      raise fail("a random sweep needs 'count': how many points to draw.")
    if not _is_int(count) or count < 1:
      raise fail(f"'count' must be an integer >= 1, got {count!r}.")
    seed = 0 if seed is None else seed
    if not _is_int(seed):
      raise fail(f"'seed' (the random sampler's seed) must be an int, got {seed!r}.")
  else:
    if count is not None:
      raise fail(f"'count': {count!r} is for random sweeps; a grid runs every point. Drop it.")
    if seed is not None:
      raise fail(f"'seed': {seed!r} is the random sampler's seed and a grid has none; set the "
                 "runs' seed with parameters {'seed': {'value': ...}} or the overrides.")
  seeds = raw.get("seeds", 1)
  if isinstance(seeds, Mapping):  # seed rounds (checked by rounds_lib.parse): `max` per point
    seeds = seeds["max"]
  if not _is_int(seeds) or seeds < 1:
    raise fail(f"'seeds' must be an integer >= 1 or a dict such as {{'min': 3, 'max': 20, "
               f"'until': {{'ci_half_width': 0.01}}}}, got {seeds!r}.")
  return (int(count) if count is not None else None,
          int(seed) if seed is not None else None, int(seeds))


def _check_parameters(parameters, base, method: str, fail) -> list[_Param]:
  if not isinstance(parameters, Mapping):
    raise fail(f"'parameters' must be a dict of config key -> spec, got "
               f"{type(parameters).__name__}.")
  scratch = copy.deepcopy(base)  # values are type-checked by setting them here
  params: dict[str, _Param] = {}
  given_as: dict[str, str] = {}
  for given, spec in parameters.items():
    if not isinstance(given, str):
      raise fail(f"parameter key {given!r} must be a string (a config key).")
    key = config_lib.canonical_key(base, given)
    if key in params:
      raise fail(f"parameters {given_as[key]!r} and {given!r} both set {key!r}; keep one.")
    _check_key(base, scratch, given, key, fail)
    params[key] = _check_parameter(given, key, spec, scratch, method, fail)
    given_as[key] = given
  return list(params.values())


def _check_key(base, scratch, given: str, key: str, fail) -> None:
  if _get(base, key) is _MISSING:  # a key of the named model, loader or loss, or a typo
    try:
      config_lib.ensure_key(base, key)  # raises the unknown-key message, with hints
      config_lib.ensure_key(scratch, key)
    except ConfigError as e:
      raise fail(f"parameter {given!r}: {e}") from None
  value = _get(base, key)
  if isinstance(value, ml_collections.ConfigDict):
    raise fail(f"parameter {given!r} is a section of the config, not a value; sweep one of its "
               f"keys ({', '.join(f'{key}.{k}' for k in sorted(value.keys()))}).")


def _check_parameter(given: str, key: str, spec, scratch, method: str, fail) -> _Param:
  if not isinstance(spec, Mapping):
    raise fail(f"parameter {given!r} must be a dict such as {{'values': [...]}}, "
               f"{{'value': v}} or {{'distribution': ..., 'min': ..., 'max': ...}}; "
               f"got {spec!r}.")
  for field in spec:
    if field not in PARAMETER_FIELDS:
      close = difflib.get_close_matches(str(field), PARAMETER_FIELDS, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise fail(f"parameter {given!r} has unknown field {field!r}.{hint} Fields: "
                 f"{', '.join(PARAMETER_FIELDS)}.")
  kinds = [kind for kind in ("values", "value", "distribution") if kind in spec]
  if len(kinds) != 1:
    found = f"both {kinds[0]!r} and {kinds[1]!r}" if len(kinds) > 1 else "none"
    raise fail(f"parameter {given!r} needs exactly one of 'values', 'value' or 'distribution', "
               f"found {found}.")
  kind = kinds[0]
  allowed = ("distribution", "min", "max", "q") if kind == "distribution" else (kind,)
  extra = [f for f in spec if f not in allowed]
  if extra:
    raise fail(f"parameter {given!r}: field {extra[0]!r} does not go with {kind!r}; drop it.")

  if kind == "value":
    return _Param(key, "value", value=_typed(scratch, given, key, spec["value"], "value", fail))
  if kind == "values":
    values = spec["values"]
    if not isinstance(values, (list, tuple)):
      raise fail(f"parameter {given!r}: 'values' must be a list, got {values!r}.")
    if not values:
      raise fail(f"parameter {given!r}: 'values' is empty; list at least one value.")
    typed = [_typed(scratch, given, key, v, "value", fail) for v in values]
    seen: dict[str, Any] = {}
    for v in typed:
      if _identity(v) in seen:
        raise fail(f"parameter {given!r} lists the value {v!r} twice; drop the repeat.")
      seen[_identity(v)] = v
    return _Param(key, "values", values=tuple(typed))
  if method == "grid":
    raise fail(f"parameter {given!r} has a distribution, which a grid cannot enumerate; use "
               "'values', or method 'random'.")
  distribution = _check_distribution(given, spec, fail)
  if _field_type(scratch, key) is int and isinstance(_representative(distribution), float):
    raise fail(f"parameter {given!r}: {key!r} takes an int, and {distribution[0]!r} draws "
               "floats; use int_uniform, or q_uniform with integer min, max and q.")
  # One representative value, so a distribution of the wrong type for its key fails here.
  _typed(scratch, given, key, _representative(distribution), "sample", fail)
  return _Param(key, "distribution", distribution=distribution)


def _check_distribution(given: str, spec, fail) -> tuple:
  name = spec["distribution"]
  if name not in DISTRIBUTIONS:
    close = difflib.get_close_matches(str(name), DISTRIBUTIONS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise fail(f"parameter {given!r}: unknown distribution {name!r}.{hint} Choose from "
               f"{', '.join(DISTRIBUTIONS)}.")
  if "q" in spec and name != "q_uniform":
    raise fail(f"parameter {given!r}: 'q' only goes with 'q_uniform'; drop it.")
  bounds = []
  for field in ("min", "max"):
    if field not in spec:
      raise fail(f"parameter {given!r}: distribution {name!r} needs '{field}'.")
    value = spec[field]
    if not _is_number(value) or not math.isfinite(value):
      raise fail(f"parameter {given!r}: '{field}' must be a finite number, got {value!r}.")
    bounds.append(value)
  low, high = bounds
  if low > high:
    raise fail(f"parameter {given!r}: 'min' ({low!r}) is above 'max' ({high!r}); swap them.")
  q = spec.get("q", 1)
  if name == "log_uniform_values" and low <= 0:
    raise fail(f"parameter {given!r}: log_uniform_values needs 'min' > 0, got {low!r}.")
  if name == "int_uniform" and not (_is_int(low) and _is_int(high)):
    raise fail(f"parameter {given!r}: int_uniform needs integer 'min' and 'max', got "
               f"{low!r} and {high!r}.")
  if name == "q_uniform" and (not _is_number(q) or not math.isfinite(q) or q <= 0):
    raise fail(f"parameter {given!r}: 'q' must be a number > 0, got {q!r}.")
  if name == "int_uniform":
    return (name, int(low), int(high), None)
  if name == "q_uniform":
    integral = all(_is_int(v) for v in (low, high, q))  # then samples are ints
    cast = int if integral else float
    return (name, cast(low), cast(high), cast(q))
  return (name, float(low), float(high), None)


def _check_zip(groups, params: list[_Param], base, fail) -> list[tuple[str, ...]]:
  if not isinstance(groups, (list, tuple)) or not all(
      isinstance(g, (list, tuple)) for g in groups):
    raise fail(f"'zip' must be a list of lists of parameter keys, got {groups!r}.")
  by_key = {p.key: p for p in params}
  out, owner = [], {}
  for group in groups:
    if len(group) < 2:
      raise fail(f"zip group {list(group)!r} has fewer than 2 keys; a group pairs parameters.")
    keys = []
    for given in group:
      key = config_lib.canonical_key(base, given) if isinstance(given, str) else given
      if key not in by_key:
        raise fail(f"zip key {given!r} is not in 'parameters'; add it there or drop it.")
      if key in owner:
        raise fail(f"zip key {given!r} is in two groups; put it in one.")
      if by_key[key].kind != "values":
        raise fail(f"zip key {given!r} has no 'values' list; only 'values' can be zipped.")
      owner[key] = True
      keys.append(key)
    lengths = {key: len(by_key[key].values) for key in keys}
    if len(set(lengths.values())) > 1:
      raise fail(f"zip group {list(group)!r} has 'values' of different lengths "
                 f"({', '.join(f'{k}: {n}' for k, n in lengths.items())}); make them equal.")
    rows = list(zip(*(by_key[key].values for key in keys), strict=True))
    if len({_identity(row) for row in rows}) < len(rows):
      raise fail(f"zip group {list(group)!r} repeats a combination of values; drop the repeat.")
    # Kept in parameter order, so the group's axis sits at its first key.
    out.append(tuple(sorted(keys, key=list(by_key).index)))
  return out


def _grid_axes(swept: list[_Param], groups) -> list[list[dict[str, Any]]]:
  """One axis per parameter (a zipped group is one axis, at its first key); an axis is a list
  of {key: value} for the keys it sets."""
  group_of = {key: group for group in groups for key in group}
  by_key = {p.key: p for p in swept}
  axes = []
  for p in swept:
    group = group_of.get(p.key, (p.key,))
    if group[0] == p.key:
      columns = [by_key[key].values for key in group]
      axes.append([dict(zip(group, row, strict=True)) for row in zip(*columns, strict=True)])
  return axes


def _sample_points(swept: list[_Param], groups, count: int, seed: int, base, fail):
  """`count` points, drawn point by point; within a point, parameters in their order: a
  `values` list or a zipped group draws one index (`rng.integers(n)`), a distribution one
  sample (`rng.uniform`, or `rng.integers` for int_uniform)."""
  import numpy as np  # only random sweeps need it

  rng = np.random.default_rng(seed)
  group_of = {key: group for group in groups for key in group}
  by_key = {p.key: p for p in swept}
  scratch = copy.deepcopy(base)
  points = []
  for _ in range(count):
    point: dict[str, Any] = {}
    for p in swept:
      group = group_of.get(p.key)
      if group is not None:
        if group[0] == p.key:  # one index for the whole group
          index = int(rng.integers(len(p.values)))
          point.update({key: by_key[key].values[index] for key in group})
      elif p.kind == "values":
        point[p.key] = p.values[int(rng.integers(len(p.values)))]
      else:
        sample = _draw(rng, p.distribution)
        point[p.key] = _typed(scratch, p.key, p.key, sample, "sample", fail)
    points.append({p.key: point[p.key] for p in swept})
  return points


def _draw(rng, distribution: tuple):
  name, low, high, q = distribution
  if name == "uniform":
    return float(rng.uniform(low, high))
  if name == "log_uniform_values":
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))
  if name == "int_uniform":
    return int(rng.integers(low, high + 1))
  value = round(float(rng.uniform(low, high)) / q) * q  # q_uniform
  return type(q)(value)


def _representative(distribution: tuple):
  name, low, _, q = distribution
  return type(q)(low) if name == "q_uniform" else low


def _members(points, params: list[_Param], seeds: int, base_seed: int) -> list[Member]:
  constants = {p.key: p.value for p in params if not p.swept}
  rows, overrides = [], []
  for point in points:
    for offset in range(seeds):
      values = {p.key: (point[p.key] if p.swept else constants[p.key]) for p in params}
      seed = values.pop("seed", base_seed + offset)
      overrides.append({**values, "seed": seed})
      rows.append({**{k: v for k, v in point.items() if k != "seed"}, "seed": seed})
  names = member_names(rows)
  return [Member(name=n, overrides=o, seed=int(o["seed"]))
          for n, o in zip(names, overrides, strict=True)]


def _param_definition(p: _Param) -> dict[str, Any]:
  if p.kind == "values":
    return {"values": _plain_tree(list(p.values))}
  if p.kind == "value":
    return {"value": _plain_tree(p.value)}
  name, low, high, q = p.distribution
  out = {"distribution": name, "min": low, "max": high}
  if name == "q_uniform":
    out["q"] = q
  return out


# Small helpers.


def _typed(scratch, given: str, key: str, value, what: str, fail):
  """`value` as the config stores it at `key`; a value of the wrong type fails, naming both."""
  if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # a numpy scalar
    value = value.item()
  field_type = _field_type(scratch, key)
  type_name = getattr(field_type, "__name__", str(field_type))
  # ml_collections would store True as 1 in an int or float field.
  if isinstance(value, bool) and field_type not in (bool, type(None)):
    raise fail(f"parameter {given!r}: {what} {value!r} does not fit {key!r}, which is of type "
               f"{type_name}; fix it in the sweep.")
  try:
    config_lib.set_value(scratch, key, value)
  except ConfigError as e:
    raise fail(f"parameter {given!r}: {what} {value!r} does not fit {key!r}, which is of type "
               f"{type_name} ({e}); fix it in the sweep.") from None
  return _get(scratch, key)


def _field_type(config, key: str):
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  return node.get_type(leaf)


def _get(config, key: str, default=_MISSING):
  node = config
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return default
    node = node[part]
  return node


def _short_names(keys: list[str]) -> dict[str, str]:
  reverse = {canonical: alias for alias, canonical in config_lib.ALIASES.items()}
  short = {key: reverse.get(key, key.rsplit(".", 1)[-1]) for key in keys}
  taken = list(short.values())
  return {key: (s if taken.count(s) == 1 else key) for key, s in short.items()}


def _value_texts(values: list) -> list[str]:
  """Each value's text in a name; a style that would merge distinct values is passed over."""
  distinct = {_identity(v): v for v in values}
  for style in ("g", "repr_floats", "repr"):
    texts = {ident: _format(v, style) for ident, v in distinct.items()}
    if len({_UNSAFE.sub("_", t).lower() for t in texts.values()}) == len(texts):
      break
  return [texts[_identity(v)] for v in values]


def _format(value, style: str) -> str:
  if style == "repr":
    return repr(value)
  if value is None:
    return "none"
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    return repr(value) if style == "repr_floats" else f"{value:g}"
  if isinstance(value, str):
    return value
  if isinstance(value, (list, tuple)):
    return "x".join(_format(v, style) for v in value) or "none"
  return str(value)


def _shorten(name: str) -> str:
  if len(name) <= MAX_NAME_LENGTH:
    return name
  digest = hashlib.sha1(name.encode()).hexdigest()[:8]
  return f"{name[:MAX_NAME_LENGTH - 9]}-{digest}"


def _identity(value) -> str:
  return repr(_plain_tree(value))


def _plain_tree(value):
  """JSON's shapes: tuples as lists, ConfigDicts and mappings as dicts, numpy scalars unboxed."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {k: _plain_tree(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain_tree(v) for v in value]
  if hasattr(value, "item") and not isinstance(value, (str, bytes)):
    return value.item()
  return value


def _diff(a, b, path: str, lines: list[str]) -> None:
  if isinstance(a, dict) and isinstance(b, dict):
    for key in [*a, *(k for k in b if k not in a)]:
      sub = f"{path}.{key}" if path else str(key)
      if key not in b:
        lines.append(f"{sub}: {a[key]!r} -> (absent)")
      elif key not in a:
        lines.append(f"{sub}: (absent) -> {b[key]!r}")
      else:
        _diff(a[key], b[key], sub, lines)
  elif a != b:
    lines.append(f"{path or '(definition)'}: {a!r} -> {b!r}")


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _one_line(text: str) -> str:
  return " ".join(text.split())


def _load_module(path: str):
  spec = importlib.util.spec_from_file_location("gmf_jax_sweep_file", os.path.abspath(path))
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # a broken sweep file: name it, keep the cause
    raise ConfigError(_one_line(
        f"sweep file {path!r} failed to load: {type(e).__name__}: {e}")) from e
  return module
