"""Diagnostics of any network: weight, gradient and update norms; activation statistics."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gmf_jax.diagnostics.base import Diagnostic
from gmf_jax.diagnostics.requirements import (
  abstract_model_state,
  abstract_params,
  abstract_probe,
)
from gmf_jax.models.rngs import model_rngs
from gmf_jax.models.variables import bound_apply


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def make_weight_stats(exp) -> Diagnostic:
  """Per parameter array: its norm, the norm of the loss gradient on the probe batch, and the
  ratio of the optimizer's update to the parameter (how fast each layer moves)."""
  params = abstract_params(exp)
  names = [] if params is None else [
      _path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]

  def compute(state, probe, rng):
    loss = exp.loss_for(state.hparams)
    apply = bound_apply(state.apply_fn, state.model_state, {})  # statistics not kept
    grads = jax.grad(lambda p: loss(p, apply, probe, rng, True)[0])(state.params)
    updates, _ = exp.tx_for(state.hparams).update(grads, state.opt_state, state.params)
    norms = lambda tree: jnp.stack([jnp.linalg.norm(a).astype(jnp.float32)
                                    for a in jax.tree_util.tree_leaves(tree)])  # (L,)
    p_norms, g_norms, u_norms = norms(state.params), norms(grads), norms(updates)
    ratios = u_norms / jnp.maximum(p_norms, 1e-12)
    total = lambda norms: jnp.sqrt(jnp.sum(jnp.square(norms)))
    scalars = {"param_norm": total(p_norms), "grad_norm": total(g_norms),
               "update_ratio": total(u_norms) / jnp.maximum(total(p_norms), 1e-12)}
    for i, name in enumerate(names):
      scalars[f"{name}/param_norm"] = p_norms[i]
      scalars[f"{name}/grad_norm"] = g_norms[i]
      scalars[f"{name}/update_ratio"] = ratios[i]
    return scalars, {"param_norm": p_norms, "grad_norm": g_norms, "update_ratio": ratios}

  return Diagnostic(compute, static={"names": np.asarray(names)})


def _is_layer(module, method_name) -> bool:
  return method_name == "__call__" and isinstance(module, (nn.Dense, nn.Conv, nn.ConvTranspose))


def effective_rank(h: jax.Array) -> jax.Array:
  """exp(entropy) of the normalised singular values of centred h (N, D) (Roy & Vetterli 2007)."""
  s = jnp.linalg.svd(h - h.mean(0), compute_uv=False)
  p = s / jnp.maximum(jnp.sum(s), 1e-12)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def make_activation_stats(exp) -> Diagnostic:
  """For each Dense/Conv layer's output (the pre-activation) on the probe batch: the fraction of
  dead units (never > 0 on any probe example: a dead ReLU) and the effective rank of the
  representation. Conv channels count as units. Output layers are included."""

  def layer_stats(params, model_state, x, rng):  # {layer: (dead fraction, rank)}, by name
    apply = bound_apply(exp.model.apply, model_state)
    _, captured = apply({"params": params}, x, train=False, rngs=model_rngs(rng),
                        capture_intermediates=_is_layer, mutable=["intermediates"])
    stats = {}
    for path, out in jax.tree_util.tree_flatten_with_path(captured["intermediates"])[0]:
      name = "/".join(str(getattr(k, "key", k)) for k in path[:-2])  # drop '__call__', 0
      h = out.reshape((-1, out.shape[-1]))  # (N * spatial, units)
      stats[name] = (jnp.mean(jnp.all(h <= 0, axis=0)), effective_rank(h))
    return stats

  params = abstract_params(exp)
  layers = [] if params is None else list(jax.eval_shape(
      layer_stats, params, abstract_model_state(exp), abstract_probe(exp)["x"],
      jax.random.PRNGKey(0)))

  def compute(state, probe, rng):
    stats = layer_stats(state.params, state.model_state, probe["x"], rng)
    scalars = {}
    for name in layers:
      dead, rank = stats[name]
      scalars[f"{name}/dead_fraction"] = dead
      scalars[f"{name}/effective_rank"] = rank
    dead = jnp.stack([stats[name][0] for name in layers]) if layers else jnp.zeros((0,))
    rank = jnp.stack([stats[name][1] for name in layers]) if layers else jnp.zeros((0,))
    scalars["mean_dead_fraction"] = jnp.mean(dead) if layers else jnp.zeros(())
    return scalars, {"dead_fraction": dead, "effective_rank": rank}

  return Diagnostic(compute, static={"layers": np.asarray(layers)})
