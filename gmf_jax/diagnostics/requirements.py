"""What a diagnostic can ask of the experiment, checked abstractly (no compute) at build time."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gmf_jax.errors import ConfigError

_LATENT_CACHE: dict[int, tuple[object, tuple[str | None, int | None]]] = {}


def _mean(encoded):
  """encode's output -> the latent point: the mean of a VAE's (mean, logvar), else the code."""
  return encoded[0] if isinstance(encoded, tuple) else encoded


def encode_mean(apply_fn, params, x: jax.Array) -> jax.Array:
  """The encoder's mean of x, the point a diagnostic decodes from or differentiates at.

  The tuple test is the one `latent_kind` makes, so this agrees with it without being told.
  """
  return _mean(apply_fn({"params": params}, x, method="encode"))  # (B, L)


def _latent_info(exp) -> tuple[str | None, int | None]:
  """(kind, latent dim) of the model, traced once per experiment."""
  cached = _LATENT_CACHE.get(id(exp))
  if cached is not None and cached[0] is exp:
    return cached[1]
  info: tuple[str | None, int | None] = (None, None)
  try:
    x = jax.ShapeDtypeStruct((2, *exp.dataset.example_shape), jnp.float32)
    rngs = {k: jax.random.PRNGKey(0) for k in ("params", "sample", "dropout")}

    def trace(x):
      variables = exp.model.init(rngs, x, train=False)
      encoded = exp.model.apply(variables, x, method="encode")
      exp.model.apply(variables, _mean(encoded), method="decode")
      return encoded

    encoded = jax.eval_shape(trace, x)
    info = ("vae" if isinstance(encoded, tuple) else "ae", int(_mean(encoded).shape[-1]))
  except Exception:  # noqa: BLE001 - no encode/decode, or they do not run on this data
    pass
  _LATENT_CACHE.clear()  # one experiment at a time; keeps no stale models alive
  _LATENT_CACHE[id(exp)] = (exp, info)
  return info


def latent_kind(exp) -> str | None:
  """'vae' if the model has encode(x) -> (mean, logvar) and decode(z); 'ae' if encode(x) -> z
  and decode(z); None otherwise."""
  return _latent_info(exp)[0]


def latent_dim(exp) -> int:
  return _latent_info(exp)[1]


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
