"""What a diagnostic can ask of the experiment, checked abstractly (no compute) at build time."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gmf_jax.errors import ConfigError


def _abstract_variables(exp):
  x = jax.ShapeDtypeStruct((2, *exp.dataset.example_shape), jnp.float32)
  rngs = {k: jax.random.PRNGKey(0) for k in ("params", "sample", "dropout")}
  return jax.eval_shape(lambda x: exp.model.init(rngs, x, train=False), x), x


def latent_kind(exp) -> str | None:
  """'vae' if the model has encode(x) -> (mean, logvar) and decode(z); 'ae' if encode(x) -> z
  and decode(z); None otherwise."""
  try:
    variables, x = _abstract_variables(exp)
    encoded = jax.eval_shape(lambda v, x: exp.model.apply(v, x, method="encode"), variables, x)
  except Exception:  # noqa: BLE001 - no encode method, or it does not run on this data
    return None
  mean = encoded[0] if isinstance(encoded, tuple) else encoded
  try:
    jax.eval_shape(lambda v, z: exp.model.apply(v, z, method="decode"), variables, mean)
  except Exception:  # noqa: BLE001
    return None
  return "vae" if isinstance(encoded, tuple) else "ae"


def latent_dim(exp) -> int:
  variables, x = _abstract_variables(exp)
  encoded = jax.eval_shape(lambda v, x: exp.model.apply(v, x, method="encode"), variables, x)
  mean = encoded[0] if isinstance(encoded, tuple) else encoded
  return int(mean.shape[-1])


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
