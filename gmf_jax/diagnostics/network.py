"""Diagnostics of any network: weight, gradient and update norms; activation statistics."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gmf_jax.diagnostics.base import DiagnosticResult, to_host
from gmf_jax.train.losses import model_rngs


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def make_weight_stats(exp):
  """Per parameter array: its norm, the norm of the loss gradient on the probe batch, and the
  ratio of the optimizer's update to the parameter (how fast each layer moves)."""

  @jax.jit
  def compute(state, batch, rng):
    loss = exp.loss_for(state.hparams)
    grads = jax.grad(lambda p: loss(p, state.apply_fn, batch, rng, True)[0])(state.params)
    updates, _ = exp.tx_for(state.hparams).update(grads, state.opt_state, state.params)
    norm = lambda tree: jax.tree_util.tree_map(jnp.linalg.norm, tree)
    return norm(state.params), norm(grads), norm(updates)

  def run(state, probe, rng):
    params, grads, updates = to_host(compute(state, probe, rng))
    names, p_norms, g_norms, u_norms = [], [], [], []
    for (path, p), g, u in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                               jax.tree_util.tree_leaves(grads),
                               jax.tree_util.tree_leaves(updates), strict=True):
      names.append(_path_name(path))
      p_norms.append(float(p))
      g_norms.append(float(g))
      u_norms.append(float(u))
    p_norms, g_norms, u_norms = map(np.asarray, (p_norms, g_norms, u_norms))
    ratios = u_norms / np.maximum(p_norms, 1e-12)
    scalars = {
        "param_norm": float(np.sqrt(np.sum(p_norms**2))),
        "grad_norm": float(np.sqrt(np.sum(g_norms**2))),
        "update_ratio": float(np.sqrt(np.sum(u_norms**2)) / max(np.sqrt(np.sum(p_norms**2)),
                                                                1e-12)),
    }
    for name, p, g, r in zip(names, p_norms, g_norms, ratios, strict=True):
      scalars[f"{name}/param_norm"] = float(p)
      scalars[f"{name}/grad_norm"] = float(g)
      scalars[f"{name}/update_ratio"] = float(r)
    return DiagnosticResult(scalars=scalars, arrays={
        "names": np.asarray(names), "param_norm": p_norms, "grad_norm": g_norms,
        "update_ratio": ratios})

  return run


def _is_layer(module, method_name) -> bool:
  return method_name == "__call__" and isinstance(module, (nn.Dense, nn.Conv, nn.ConvTranspose))


def effective_rank(h: jax.Array) -> jax.Array:
  """exp(entropy) of the normalised singular values of centred h (N, D) (Roy & Vetterli 2007)."""
  s = jnp.linalg.svd(h - h.mean(0), compute_uv=False)
  p = s / jnp.maximum(jnp.sum(s), 1e-12)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


def make_activation_stats(exp):
  """For each Dense/Conv layer's output (the pre-activation) on the probe batch: the fraction of
  dead units (never > 0 on any probe example: a dead ReLU) and the effective rank of the
  representation. Conv channels count as units. Output layers are included."""

  @jax.jit
  def compute(params, x, rng):
    _, captured = exp.model.apply({"params": params}, x, train=False, rngs=model_rngs(rng),
                                  capture_intermediates=_is_layer, mutable=["intermediates"])
    stats = {}
    for path, out in jax.tree_util.tree_flatten_with_path(captured["intermediates"])[0]:
      name = "/".join(str(getattr(k, "key", k)) for k in path[:-2])  # drop '__call__', 0
      h = out.reshape((-1, out.shape[-1]))  # (N * spatial, units)
      stats[name] = (jnp.mean(jnp.all(h <= 0, axis=0)), effective_rank(h))
    return stats

  def run(state, probe, rng):
    stats = to_host(compute(state.params, probe["x"], rng))
    scalars = {}
    for name, (dead, rank) in stats.items():
      scalars[f"{name}/dead_fraction"] = float(dead)
      scalars[f"{name}/effective_rank"] = float(rank)
    dead = np.asarray([d for d, _ in stats.values()])
    scalars["mean_dead_fraction"] = float(dead.mean()) if dead.size else 0.0
    return DiagnosticResult(scalars=scalars, arrays={
        "layers": np.asarray(list(stats)), "dead_fraction": dead,
        "effective_rank": np.asarray([r for _, r in stats.values()])})

  return run
