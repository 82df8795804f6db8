"""Resolve a config name to an object: a built-in name, or a user's `module:attr` / `file.py:attr`.

This is the only place where strings from the config turn into code. Call it at build time.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Collection, Mapping
from typing import Any

from gmf_jax.config import (
  COMPONENT_SECTIONS,
  ConfigOrigin,
  default_config,
  flatten,
  same_value,
)
from gmf_jax.errors import ConfigError

log = logging.getLogger("gmf_jax")


def resolve(name: str, builtins: Mapping[str, Any], *, key: str) -> Any:
  """Returns `builtins[name]`, or the object `name` points to as `pkg.module:attr` / `path.py:attr`.

  Args:
    name: the value found in the config.
    builtins: the built-in choices, by name.
    key: the config key that held `name`, for the error message.

  Raises:
    ConfigError: naming the key, the value and the valid choices.
  """
  if not isinstance(name, str) or not name:
    raise ConfigError(f"{key}={name!r} is not a name; valid names: {_choices(builtins)}.")
  if name in builtins:
    return builtins[name]
  if ":" not in name:
    close = difflib.get_close_matches(name, list(builtins), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"{key}={name!r} is unknown.{hint} Valid names: {_choices(builtins)}; "
        "or point to your own code as 'my_pkg.my_module:Name' or 'path/to/file.py:Name'."
    )
  return import_object(name, key=key)


def import_object(spec: str, *, key: str) -> Any:
  """Imports `pkg.module:attr` or `path/to/file.py:attr`, with a ConfigError on failure."""
  module_name, _, attr = spec.rpartition(":")
  if not module_name or not attr:
    raise ConfigError(f"{key}={spec!r} must look like 'my_pkg.my_module:Name' or 'file.py:Name'.")
  try:
    if module_name.endswith(".py"):
      module = _import_file(module_name, key=key)
    else:
      module = importlib.import_module(module_name)
  except ConfigError:
    raise
  except ImportError as e:
    raise ConfigError(
        f"{key}={spec!r}: cannot import module {module_name!r} ({e}). Check the name and that "
        "its package is on PYTHONPATH (or give a file path ending in .py)."
    ) from e
  try:
    return getattr(module, attr)
  except AttributeError:
    raise ConfigError(
        f"{key}={spec!r}: module {module_name!r} has no attribute {attr!r}."
    ) from None


def _import_file(path: str, *, key: str):
  path = os.path.abspath(path)
  if not os.path.isfile(path):
    raise ConfigError(f"{key}: file {path!r} does not exist.")
  # A stable module name per file, so pickling and repeated imports agree.
  digest = hashlib.sha1(path.encode()).hexdigest()[:10]
  mod_name = f"gmf_jax_user_{os.path.splitext(os.path.basename(path))[0]}_{digest}"
  if mod_name in sys.modules:
    return sys.modules[mod_name]
  spec = importlib.util.spec_from_file_location(mod_name, path)
  module = importlib.util.module_from_spec(spec)
  sys.modules[mod_name] = module
  try:
    spec.loader.exec_module(module)
  except Exception:
    del sys.modules[mod_name]
    raise
  return module


def _choices(builtins: Mapping[str, Any]) -> str:
  return ", ".join(sorted(builtins))


def checked_kwargs(target: Any, kwargs: Mapping[str, Any], *, key: str) -> dict[str, Any]:
  """Checks that every name in `kwargs` is a parameter of `target` (a function or a class).

  Args:
    target: what the kwargs will be passed to (a factory function or a flax Module class).
    kwargs: the config section, without its `name`.
    key: the config section's key, for the error message.

  Returns:
    `kwargs` as a plain dict.

  Raises:
    ConfigError: naming the unexpected key and the valid ones.
  """
  names, takes_any = parameter_names(target)
  out = dict(kwargs)
  for k in out:
    if k not in names and not takes_any:
      raise ConfigError(
          f"{key}.{k} is not an option of {getattr(target, '__name__', target)!s}; "
          f"its options: {', '.join(names) or '(none)'}."
      )
  return out


def parameter_names(target: Any) -> tuple[list[str], bool]:
  """The keyword parameters of a function or a Module class, and whether it takes **kwargs."""
  params = [p for p in inspect.signature(target).parameters.values()
            if p.name not in ("self", "parent", "name")]
  takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
  return [p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD], takes_any


NO_DEFAULT = object()


def component_options(section: str, name: Any) -> dict[str, tuple[Any, Any]] | None:
  """The options the component `name` of `section` takes: {option: (default, annotation)},
  the default `NO_DEFAULT` where it has none. None when `section` holds no component.

  Called when a config key of the section is not in the config (the config file set the keys
  of the component it chose; the user named another). Imports the component, so it runs only
  then.

  Raises:
    ConfigError: `name` cannot be resolved (an unknown name, a module that fails to import).
  """
  if section not in COMPONENT_SECTIONS:
    return None
  target = _component(section, name)
  hints = _hints(target)
  if dataclasses.is_dataclass(target):  # a flax Module or a loss: its fields
    return {f.name: (_field_default(f), hints.get(f.name, f.type))
            for f in dataclasses.fields(target)
            if f.init and f.name not in ("parent", "name")}
  params = inspect.signature(target).parameters.values()
  return {p.name: (NO_DEFAULT if p.default is inspect.Parameter.empty else p.default,
                   hints.get(p.name, p.annotation))
          for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _component(section: str, name: Any) -> Any:
  if section == "model":
    from gmf_jax.models import MODELS

    return resolve(name, MODELS, key="model.name")
  if section == "loss":
    from gmf_jax.train.losses import LOSSES

    return resolve(name, LOSSES, key="loss.name")
  from gmf_jax.data import DATASETS
  from gmf_jax.data.tfds_source import load_tfds

  if isinstance(name, str) and name.startswith("tfds:"):
    return load_tfds
  return resolve(name, DATASETS, key="data.name")


def _field_default(field: dataclasses.Field) -> Any:
  if field.default is not dataclasses.MISSING:
    return field.default
  if field.default_factory is not dataclasses.MISSING:
    return field.default_factory()
  return NO_DEFAULT


def _hints(target: Any) -> dict[str, Any]:
  import typing

  try:
    return typing.get_type_hints(target)
  except Exception:  # noqa: BLE001 - annotations a user's module cannot resolve: none then
    return {}


class ComponentOptions:
  """Splits a config section into the options its chosen component takes, at build time.

  A section (`optimizer`, `schedule`, `loss`, `model`, `data`) names a component and holds
  options, some of which only other components use. An option the chosen component does not
  take is fine at its default. Otherwise, it is:
  - refused when the user chose it (an override, or a value changed after loading): it would
    silently do nothing;
  - left out when the config file set it for the component the file chose, and the user
    switched `<section>.name` to another one (`--config.schedule.name=constant` on a file that
    set `schedule.end_value` for cosine): the keys of the old component do not block a switch;
  - refused when the file set it for its own choice of component (the file is inconsistent).

  Keys left out are collected in `dropped`; the resolved config (config.json) omits them.
  """

  def __init__(self, origin: ConfigOrigin | None = None):
    self.origin = origin or ConfigOrigin()
    self.defaults = flatten(default_config())
    self.dropped: list[str] = []

  def take(self, section: str, options: Mapping[str, Any], target: Any = None, *, name: str,
           takes: Collection[str] | None = None) -> dict[str, Any]:
    """The options of `section` that `target` (or the names in `takes`) takes.

    Args:
      section: the config key of the section, e.g. 'schedule'.
      options: the section without its `name` (and without keys the caller handles itself).
      target: the function or class the options are passed to; its parameters are the
        options it takes (all of them if it takes **kwargs).
      name: the chosen component's name, for messages.
      takes: the option names, instead of `target`'s parameters.

    Raises:
      ConfigError: an option the component does not take, set where it must take effect.
    """
    takes_any = False
    if takes is None:
      takes, takes_any = parameter_names(target)
    kwargs = {}
    for key, value in options.items():
      if key in takes or takes_any:
        kwargs[key] = value
        continue
      full = f"{section}.{key}"
      if full in self.defaults and same_value(value, self.defaults[full]):
        continue  # left at its default: nothing to refuse
      file_name = self.origin.file_value(f"{section}.name", name)
      by_user = self.origin.set_by_user(full, value)
      if not by_user and file_name != name:
        self.dropped.append(full)
        log.info("%s=%r (set in %s for %s.name=%r) is left out: %s.name=%r does not use it.",
                 full, value, self.origin.file, section, file_name, section, name)
        continue
      close = difflib.get_close_matches(key, list(takes), n=1)
      hint = f" Did you mean {section}.{close[0]}?" if close else ""
      where = "" if by_user else (
          f" (set in {self.origin.file}; remove it there)")
      raise ConfigError(
          f"{full}={value!r}{where} has no effect with {section}.name={name!r}; it takes: "
          f"{', '.join(sorted(takes)) or '(nothing else)'}.{hint}")
    return kwargs
