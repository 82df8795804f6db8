"""Diagnostics of generative models: reconstructions, prior samples, latent space, traversals."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from gmf_jax.checks import check_int, check_number
from gmf_jax.diagnostics import figures
from gmf_jax.diagnostics.base import Diagnostic
from gmf_jax.diagnostics.requirements import (
  encode_mean,
  latent_dim,
  probe_size,
  require_images,
  require_latent,
)
from gmf_jax.models.autoencoders import likelihood_mean
from gmf_jax.models.variables import state_apply


def _output_mean(exp):
  """Decoder output -> the mean of p(x | z) under this run's likelihood (Gaussian if none)."""
  return functools.partial(likelihood_mean, getattr(exp.loss, "likelihood", "gaussian"))


def make_reconstructions(exp, num: int = 16) -> Diagnostic:
  """Probe inputs beside their reconstructions decode(encode_mean(x)); scalar: mean squared
  error per example (sum over pixels).

  Args:
    num: how many probe examples to keep and draw, at most the probe's size (probe_size, or the
      test split when smaller); the mse is over the whole probe.
  """
  require_latent(exp, "reconstructions")
  size = probe_size(exp)
  check_int("diagnostics.reconstructions.num", num, low=1, high=size,
            hint=f"The probe holds {size} examples (probe_size={exp.config.probe_size}, test "
            f"split of {len(exp.dataset.test)}).")
  mean_of = _output_mean(exp)

  def compute(state, probe, rng):
    x = probe["x"]
    z = encode_mean(state_apply(state), state.params, x)
    recon = mean_of(state_apply(state)({"params": state.params}, z, method="decode"))  # like x
    mse = jnp.sum(jnp.square(recon - x).reshape((x.shape[0], -1)), -1)  # (B,)
    return {"mse": jnp.mean(mse)}, {"inputs": x[:num], "reconstructions": recon[:num]}

  return Diagnostic(compute, draw=draw_reconstructions if exp.dataset.kind == "image" else None)


def draw_reconstructions(arrays: dict[str, np.ndarray],
                         scalars: dict[str, float] | None = None) -> dict[str, Figure]:
  """Inputs above their reconstructions (images only: (N, H, W, C))."""
  if arrays["inputs"].ndim != 4:
    return {}
  return {"grid": figures.image_grid([arrays["inputs"], arrays["reconstructions"]],
                                     ["input", "reconstruction"], "reconstructions")}


def make_samples(exp, num: int = 16, temperature: float = 1.0) -> Diagnostic:
  """Decoded samples from the prior z ~ N(0, temperature^2 I), for VAEs.

  Args:
    num: how many samples.
    temperature: the prior's scale; > 0 (at 0 every sample is decode(0)).
  """
  require_latent(exp, "samples", kinds=("vae",))
  check_int("diagnostics.samples.num", num, low=1)
  check_number("diagnostics.samples.temperature", temperature, low=0, low_open=True)
  dim = latent_dim(exp)
  mean_of = _output_mean(exp)

  def compute(state, probe, rng):
    z = temperature * jax.random.normal(rng, (num, dim))
    return {}, {"samples": mean_of(state_apply(state)({"params": state.params}, z,
                                                    method="decode"))}

  return Diagnostic(compute, draw=draw_samples if exp.dataset.kind == "image" else None)


def draw_samples(arrays: dict[str, np.ndarray],
                 scalars: dict[str, float] | None = None) -> dict[str, Figure]:
  """The samples in a square-ish grid (images only: (N, H, W, C))."""
  samples = arrays["samples"]
  if samples.ndim != 4:
    return {}
  num = len(samples)
  per_row = int(np.ceil(np.sqrt(num)))
  rows = [samples[i:i + per_row] for i in range(0, num, per_row)]
  return {"grid": figures.image_grid(rows, [""] * len(rows), "samples from the prior")}


def _pca(z: jax.Array, k: int = 2) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Projection of z (N, L) on its top-k principal axes; also the axes and explained variance."""
  centred = z - z.mean(0)
  _, s, vt = jnp.linalg.svd(centred, full_matrices=False)
  explained = s**2 / jnp.maximum(jnp.sum(s**2), 1e-12)
  return centred @ vt[:k].T, vt[:k], explained[:k]


def make_latent_space(exp) -> Diagnostic:
  """Encoder means of the probe set, scattered and coloured by label (PCA above 2-D).

  Scalars: the mean posterior variance (VAEs), the number of active latent dimensions (variance
  of the mean across the probe > 0.01, Burda et al. 2016) and the share of variance in the top 2
  principal axes.
  """
  kind = require_latent(exp, "latent_space")

  def compute(state, probe, rng):
    encoded = state_apply(state)({"params": state.params}, probe["x"], method="encode")
    mean, var = (encoded[0], jnp.exp(encoded[1])) if kind == "vae" else (
        encoded, jnp.zeros_like(encoded))  # (P, L) each
    if mean.shape[1] <= 2:
      coords, explained = mean, jnp.ones(1)
    else:
      coords, _, explained = _pca(mean)
    scalars = {"active_dims": jnp.sum(mean.var(0) > 0.01).astype(jnp.float32),
               "pca2_explained": jnp.sum(explained[:2])}
    if kind == "vae":
      scalars["mean_posterior_var"] = jnp.mean(var)
    return scalars, {"means": mean, "variances": var, "labels": probe["y"], "coords": coords}

  return Diagnostic(compute, draw=draw_latent_space)


def draw_latent_space(arrays: dict[str, np.ndarray],
                      scalars: dict[str, float] | None = None) -> dict[str, Figure]:
  """The probe's latent means (or their top two principal axes), coloured by label."""
  coords, labels, dim = arrays["coords"], arrays["labels"], arrays["means"].shape[1]
  fig = figures.new_figure(4.6, 4.0, margins=(0.75, 0.15, 0.55, 0.35))
  ax = fig.add_subplot()
  ys = coords[:, 1] if coords.shape[1] > 1 else np.zeros(len(coords))
  points = ax.scatter(coords[:, 0], ys, c=labels, cmap="tab10", s=9, alpha=0.8)
  fig.colorbar(points, ax=ax, label="label")
  axis = "z" if dim <= 2 else "PC"
  ax.set_xlabel(f"{axis}1")
  ax.set_ylabel(f"{axis}2")
  ax.set_title(f"latent means ({dim}-D)")
  return {"scatter": fig}


def make_latent_traversal(exp, num_dims: int = 8, num_values: int = 9,
                          span: float = 3.0) -> Diagnostic:
  """Decodes z moving along one latent axis at a time from -span to +span, the others at 0.

  The axes with the largest variance of the probe's encoder means come first.

  Args:
    num_dims: how many axes (at most the latent size: more are capped to it).
    num_values: points along each axis, >= 2 (the ends -span and +span).
    span: the distance from 0 to each end, > 0.
  """
  require_latent(exp, "latent_traversal")
  require_images(exp, "latent_traversal")
  check_int("diagnostics.latent_traversal.num_dims", num_dims, low=1)
  check_int("diagnostics.latent_traversal.num_values", num_values, low=2)
  check_number("diagnostics.latent_traversal.span", span, low=0, low_open=True)
  dim = latent_dim(exp)
  num_dims = min(num_dims, dim)
  values = np.asarray(jnp.linspace(-span, span, num_values))  # (V,)
  mean_of = _output_mean(exp)

  def compute(state, probe, rng):
    params = state.params
    z = encode_mean(state_apply(state), params, probe["x"])  # (P, L)
    order = jnp.argsort(-jnp.var(z, axis=0))[:num_dims]  # (K,)
    base = jnp.zeros((num_dims, num_values, dim))
    grid = base.at[jnp.arange(num_dims)[:, None], jnp.arange(num_values)[None, :],
                   order[:, None]].set(values[None, :])  # (K, V, L)
    images = mean_of(state_apply(state)({"params": params}, grid.reshape((-1, dim)),
                                     method="decode"))
    return {}, {"dims": order, "images": images.reshape((num_dims, num_values,
                                                         *images.shape[1:]))}

  return Diagnostic(compute, draw=draw_latent_traversal, static={"values": values})


def draw_latent_traversal(arrays: dict[str, np.ndarray],
                          scalars: dict[str, float] | None = None) -> dict[str, Figure]:
  """One row of decoded images per latent axis."""
  span = float(arrays["values"][-1])
  return {"grid": figures.image_grid(list(arrays["images"]),
                                     [f"z{int(i)}" for i in arrays["dims"]],
                                     f"latent traversals, {-span:g} to {span:g}")}
