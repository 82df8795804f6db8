"""Resolve a config name to an object: a built-in name, or a user's `module:attr` / `file.py:attr`.

This is the only place where strings from the config turn into code. Call it at build time.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Mapping
from typing import Any

from gmf_jax.errors import ConfigError


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
  params = {
      p.name: p
      for p in inspect.signature(target).parameters.values()
      if p.name not in ("self", "parent", "name")
  }
  takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
  out = dict(kwargs)
  for k in out:
    if k not in params and not takes_any:
      valid = ", ".join(n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD)
      raise ConfigError(
          f"{key}.{k} is not an option of {getattr(target, '__name__', target)!s}; "
          f"its options: {valid or '(none)'}."
      )
  return out
