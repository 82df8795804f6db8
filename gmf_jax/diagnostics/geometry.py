"""Jacobians of the network's maps and the curvature of the loss (see linalg.py for the math)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from gmf_jax.checks import check_choice, check_int
from gmf_jax.diagnostics import figures, linalg
from gmf_jax.diagnostics.base import Diagnostic
from gmf_jax.diagnostics.requirements import (
  abstract_model_state,
  abstract_params,
  abstract_probe,
  encode_mean,
  latent_kind,
  model_output,
  refuse_if_untraceable,
)
from gmf_jax.errors import ConfigError
from gmf_jax.models.variables import bound_apply

JACOBIAN_OF = ("auto", "decoder", "encoder", "model")
JACOBIAN_MODES = ("auto", "fwd", "rev")


def make_jacobian(exp, of: str = "auto", mode: str = "auto", num: int = 64) -> Diagnostic:
  """Per-example Jacobians of a map at the probe points, and their singular-value statistics.

  Args:
    of: 'decoder' (z -> x, at the encoder means of the probe), 'encoder' (x -> mean of z),
      'model' (x -> the model's output, e.g. logits), or 'auto' (decoder when there is one).
    mode: 'auto' picks forward mode for tall maps (input dim <= output dim), reverse otherwise;
      'fwd' or 'rev' force one (for comparison).
    num: how many probe examples (at most; all of the probe when it is smaller).

  The jitted work is traced on shapes at build time (no FLOPs), so a map this model cannot
  differentiate is refused then, not when the diagnostic first runs after training.
  """
  key = "diagnostics.jacobian"
  check_choice(f"{key}.of", of, JACOBIAN_OF)
  check_choice(f"{key}.mode", mode, JACOBIAN_MODES)
  check_int(f"{key}.num", num, low=1)
  kind = latent_kind(exp)
  chosen = ("decoder" if kind else "model") if of == "auto" else of
  name = exp.config.model.name
  if chosen in ("decoder", "encoder") and kind is None:
    raise ConfigError(f"{key}.of={of!r} needs a model with encode and decode; "
                      f"model.name={name!r} has none (use of='model').")
  output = model_output(exp) if chosen == "model" else None
  if output is not None and not isinstance(output, jax.ShapeDtypeStruct):
    picked = " (here: 'model', as there is no encode and decode)" if of == "auto" else ""
    what = f"a {type(output).__name__} of {len(jax.tree_util.tree_leaves(output))} arrays"
    what += " (a VAE's recon, mean, logvar)" if kind == "vae" else ""
    fix = ": use of='decoder' or of='encoder'" if kind else ""
    raise ConfigError(f"{key}.of={of!r}{picked} needs a model whose __call__ returns one array; "
                      f"model.name={name!r} returns {what}{fix}.")
  requested, of = of, chosen
  def single_map(params, model_state):
    apply = bound_apply(exp.model.apply, model_state)
    """The map for one example: (in_shape) -> (out_shape)."""
    if of == "decoder":
      return lambda z: apply({"params": params}, z[None], method="decode")[0]
    if of == "encoder":
      return lambda x: encode_mean(apply, params, x[None])[0]
    return lambda x: apply({"params": params}, x[None], train=False)[0]

  def spectra(params, model_state, x):
    apply = bound_apply(exp.model.apply, model_state)
    points = encode_mean(apply, params, x) if of == "decoder" else x  # (B, ...)
    jac = linalg.jacobian(single_map(params, model_state), points, mode=mode)  # (B, M, N)
    sv = linalg.singular_values(jac)  # (B, K)
    return sv, linalg.jacobian_stats(jac, s=sv)

  params = abstract_params(exp)
  if params is not None:  # None: init does not trace, which build refuses, naming the cause
    refuse_if_untraceable(f"{key}.of", requested, spectra, params, abstract_model_state(exp),
                          abstract_probe(exp, num)["x"])

  def compute(state, probe, rng):
    sv, stats = spectra(state.params, state.model_state, probe["x"][:num])
    scalars = {}
    for name, values in stats.items():  # the mean over the examples where it is finite
      finite = jnp.isfinite(values)
      count = jnp.sum(finite)
      total = jnp.sum(jnp.where(finite, values, 0).astype(jnp.float32))
      scalars[f"mean_{name}"] = jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)
    return scalars, {"singular_values": sv, **stats}

  return Diagnostic(compute, draw=draw_jacobian, static={"of": np.asarray(of)})


def draw_jacobian(arrays: dict[str, np.ndarray],
                  scalars: dict[str, float] | None = None) -> dict[str, Figure]:
  """The singular values by index: the median and the 10-90% band over the examples."""
  sv = arrays["singular_values"]  # (B, K)
  fig = figures.new_figure(5.0, 3.6)
  ax = fig.add_subplot()
  idx = np.arange(1, sv.shape[1] + 1)
  low, mid, high = np.percentile(sv, [10, 50, 90], axis=0)
  ax.fill_between(idx, np.maximum(low, 1e-12), np.maximum(high, 1e-12), color="C0",
                  alpha=0.25, label="10-90% of examples")
  ax.plot(idx, np.maximum(mid, 1e-12), color="C0", marker="o", markersize=3, label="median")
  ax.set_yscale("log")
  ax.set_xlabel("index")
  ax.set_ylabel("singular value")
  ax.set_title(f"Jacobian spectrum of the {arrays['of']}")
  ax.legend(fontsize="small")
  return {"spectrum": fig}


def make_hessian(exp, k: int = 3, num_iters: int = 30, trace_samples: int = 20,
                 batch_size: int = 256) -> Diagnostic:
  """Sharpness of the training loss at the probe batch: the top-k Hessian eigenvalues (Lanczos on
  Hessian-vector products, no dense Hessian) and the Hessian trace (Hutchinson), with the loss's
  random draws (latent samples, dropout) fixed per call.

  Args:
    k: how many eigenvalues, at least 1 and at most the number of parameters.
    num_iters: Lanczos steps, >= k (they give at most num_iters eigenvalues).
    trace_samples: Hutchinson probes, >= 2 (the standard error needs two).
    batch_size: how many probe examples the loss is taken over (at most; all of the probe when
      it is smaller).
  """
  key = "diagnostics.hessian"
  check_int(f"{key}.k", k, low=1)
  check_int(f"{key}.num_iters", num_iters, low=k, hint=f"Lanczos gives at most num_iters "
            f"eigenvalues, and k={k}.")
  check_int(f"{key}.trace_samples", trace_samples, low=2,
            hint="The Hutchinson trace's standard error needs two samples.")
  check_int(f"{key}.batch_size", batch_size, low=1)
  params = abstract_params(exp)
  if params is not None:
    num_params = sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params))
    check_int(f"{key}.k", k, high=num_params,
              hint=f"The model has {num_params} parameters: its Hessian has {num_params} "
              "eigenvalues.")

  def compute(state, probe, rng):
    batch = {name: v[:batch_size] for name, v in probe.items()}
    loss_rng, lanczos_rng, trace_rng = jax.random.split(rng, 3)
    loss = exp.loss_for(state.hparams)
    apply = bound_apply(exp.model.apply, state.model_state, {})  # statistics not kept
    loss_fn = lambda p: loss(p, apply, batch, loss_rng, True)[0]
    top = linalg.top_hessian_eigenvalues(loss_fn, state.params, lanczos_rng, k=k,
                                         num_iters=num_iters)  # (k,)
    trace, stderr = linalg.hutchinson_trace(loss_fn, state.params, trace_rng,
                                            num_samples=trace_samples)
    scalars = {f"eigenvalue_{i + 1}": top[i] for i in range(k)}
    scalars.update(trace=trace, trace_stderr=stderr)
    return scalars, {"top_eigenvalues": top, "trace": jnp.stack([trace, stderr])}

  return Diagnostic(compute)
