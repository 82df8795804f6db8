"""What a diagnostic can ask of the experiment, checked abstractly (no compute) at build time.

The model is traced once per experiment, on shapes only (`jax.eval_shape`), and what a factory
needs from that trace (the parameters' shapes, the latent kind and size, the output's structure)
is kept here, so several diagnostics in one config cost one trace.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gmf_jax.errors import ConfigError
from gmf_jax.models.variables import bound_apply, split_variables

_CACHE: dict[int, tuple[object, dict[str, Any]]] = {}
_RNG_STREAMS = ("params", "sample", "dropout")


def _mean(encoded):
  """encode's output -> the latent point: the mean of a VAE's (mean, logvar), else the code."""
  return encoded[0] if isinstance(encoded, tuple) else encoded


def encode_mean(apply_fn, params, x: jax.Array) -> jax.Array:
  """The encoder's mean of x, the point a diagnostic decodes from or differentiates at.

  The tuple test is the one `latent_kind` makes, so this agrees with it without being told.
  """
  return _mean(apply_fn({"params": params}, x, method="encode"))  # (B, L)


def _cached(exp, name: str, compute):
  """`compute()` once per experiment and name; one experiment at a time is kept, so a cache
  entry holds no stale model alive (and an id reused by a new experiment is not trusted)."""
  entry = _CACHE.get(id(exp))
  if entry is None or entry[0] is not exp:
    _CACHE.clear()
    entry = _CACHE[id(exp)] = (exp, {})
  values = entry[1]
  if name not in values:
    values[name] = compute()
  return values[name]


def _rngs() -> dict[str, jax.Array]:
  return {k: jax.random.PRNGKey(0) for k in _RNG_STREAMS}


def _example(exp, batch: int = 2) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((batch, *exp.dataset.example_shape), jnp.float32)


def _abstract_variables(exp):
  """(params, model state) as trees of ShapeDtypeStructs (init traced, not run), or None if
  init does not trace on this data (build refuses such a model before the diagnostics)."""

  def trace():
    try:
      return jax.eval_shape(
          lambda x: split_variables(exp.model.init(_rngs(), x, train=False)), _example(exp))
    except Exception:  # noqa: BLE001 - build's own model check names the cause
      return None

  return _cached(exp, "variables", trace)


def abstract_params(exp):
  """The model's parameters as a tree of ShapeDtypeStructs, or None if init does not trace."""
  variables = _abstract_variables(exp)
  return None if variables is None else variables[0]


def abstract_model_state(exp) -> dict[str, Any]:
  """The model's state collections besides `params` (e.g. `batch_stats`) as ShapeDtypeStructs;
  empty for a model without any (or one whose init does not trace)."""
  variables = _abstract_variables(exp)
  return {} if variables is None else variables[1]


def probe_size(exp) -> int:
  """How many examples the probe holds: the first probe_size of the test split, or all of it
  when the split is smaller (see runner.probe_batch)."""
  return min(exp.config.probe_size, len(exp.dataset.test))


def abstract_probe(exp, limit: int | None = None) -> dict[str, jax.ShapeDtypeStruct]:
  """The probe's shapes and dtypes (as runner.probe_batch makes it), for abstract traces; with
  `limit`, of its first `limit` examples (`probe["x"][:limit]`)."""
  n = probe_size(exp) if limit is None else min(limit, probe_size(exp))
  return {"x": _example(exp, n), "y": jax.ShapeDtypeStruct((n,), jnp.int32)}


def _latent_info(exp) -> tuple[str | None, int | None]:
  """(kind, latent dim) of the model, traced once per experiment."""

  def trace():
    params = abstract_params(exp)
    if params is None:
      return None, None

    def encode_decode(params, model_state, x):
      apply = bound_apply(exp.model.apply, model_state)
      encoded = apply({"params": params}, x, method="encode")
      apply({"params": params}, _mean(encoded), method="decode")
      return encoded

    try:
      encoded = jax.eval_shape(encode_decode, params, abstract_model_state(exp), _example(exp))
    except Exception:  # noqa: BLE001 - no encode/decode, or they do not run on this data
      return None, None
    return ("vae" if isinstance(encoded, tuple) else "ae"), int(_mean(encoded).shape[-1])

  return _cached(exp, "latent", trace)


def latent_kind(exp) -> str | None:
  """'vae' if the model has encode(x) -> (mean, logvar) and decode(z); 'ae' if encode(x) -> z
  and decode(z); None otherwise."""
  return _latent_info(exp)[0]


def latent_dim(exp) -> int:
  return _latent_info(exp)[1]


def model_output(exp):
  """The structure of `__call__(x, train=False)` (ShapeDtypeStructs; a VAE's is a tuple of
  three), or None if it does not trace."""

  def trace():
    params = abstract_params(exp)
    if params is None:
      return None
    try:
      return jax.eval_shape(
          lambda p, s, x: bound_apply(exp.model.apply, s)({"params": p}, x, train=False,
                                                          rngs=_rngs()),
          params, abstract_model_state(exp), _example(exp))
    except Exception:  # noqa: BLE001 - build's own model check names the cause
      return None

  return _cached(exp, "output", trace)


def refuse_if_untraceable(key: str, value: Any, fn, *args) -> None:
  """Traces `fn(*args)` on shapes only (`jax.eval_shape`: no FLOPs) and turns any exception into
  a ConfigError naming the option, so what cannot run is refused at build time and not when the
  diagnostic first runs, after training.

  Args:
    key: the option that chose what is traced (`diagnostics.jacobian.of`).
    value: its value.
    fn: the diagnostic's jitted array work.
    *args: ShapeDtypeStructs (see abstract_params, abstract_probe) or arrays.
  """
  try:
    jax.eval_shape(fn, *args)
  except ConfigError:
    raise
  except Exception as e:  # noqa: BLE001 - any failure to trace is a config this cannot run
    lines = str(e).strip().splitlines()
    cause = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    raise ConfigError(f"{key}={value!r} cannot run on this model and data: {cause}") from e


def require_latent(exp, name: str, kinds=("vae", "ae")) -> str:
  kind = latent_kind(exp)
  if kind not in kinds:
    what = "a VAE (encode(x) -> (mean, logvar) and decode(z))" if kinds == ("vae",) else (
        "an encoder and a decoder (encode(x) and decode(z) methods)")
    raise ConfigError(
        f"diagnostics.{name} needs {what}; model.name={exp.config.model.name!r} has none. "
        f"Remove diagnostics.{name} from the config."
    )
  return kind


def require_images(exp, name: str) -> None:
  if exp.dataset.kind != "image":
    raise ConfigError(f"diagnostics.{name} draws images; data {exp.dataset.name!r} holds "
                      f"{exp.dataset.kind}. Remove diagnostics.{name} from the config.")


def require_classifier(exp, name: str) -> None:
  if exp.config.loss.name != "cross_entropy" or not exp.dataset.num_classes:
    raise ConfigError(f"diagnostics.{name} needs a classifier (loss.name='cross_entropy'); "
                      f"this run's loss is {exp.config.loss.name!r}.")
