"""Diagnostics across a population's members: how trained members differ inside.

Each takes the whole population's state at once (`PopulationDiagnostic`: every leaf with a
leading member axis) and computes every pair of members in one jitted program:

- `cka`: linear CKA (Kornblith et al. 2019) between every pair of members for every Dense/Conv
  layer's output on the probe (members x members x layers), and between every pair of layers
  within each member (members x layers x layers).
- `mode_connectivity`: the loss (and accuracy, for a classifier) on the probe at `points` evenly
  spaced points of the straight line between two members' weights, and the barrier: the
  highest loss on the line minus the mean of the two ends (Frankle et al. 2020).
- `ensemble`: the members' averaged predicted probabilities against each member alone:
  accuracy, negative log-likelihood, expected calibration error, and how often two members
  disagree (classifiers only).

All run on the probe batch (the first `probe_size` test examples, as every diagnostic does).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from gmf_jax.checks import check_int
from gmf_jax.diagnostics import figures
from gmf_jax.diagnostics.base import PopulationDiagnostic
from gmf_jax.diagnostics.network import _is_layer
from gmf_jax.diagnostics.requirements import (
  abstract_model_state,
  abstract_params,
  abstract_probe,
  require_classifier,
)
from gmf_jax.errors import ConfigError
from gmf_jax.models.rngs import model_rngs
from gmf_jax.models.variables import bound_apply


def _members_axes(states):
  """vmap's in_axes for a population's state: 0 everywhere, the shared step left alone."""
  return jax.tree_util.tree_map(lambda _: 0, states).replace(step=None)


def _over_members(fn, states, *args):
  """`fn(member state, *args)` for every member, in one vmapped call."""
  return jax.vmap(fn, in_axes=(_members_axes(states), *[None] * len(args)))(states, *args)


# --- CKA ---------------------------------------------------------------------------------------


def _layer_outputs(apply_fn, params, model_state, x, rng) -> dict[str, jax.Array]:
  """{layer name: its output on x, flattened per example (N, features)}: every Dense/Conv
  layer's `__call__` output (the pre-activation), in the order of their names (flax's
  module paths, e.g. `decoder/dense_0` before `encoder/dense_0`)."""
  apply = bound_apply(apply_fn, model_state)
  _, captured = apply({"params": params}, x, train=False, rngs=model_rngs(rng),
                      capture_intermediates=_is_layer, mutable=["intermediates"])
  out = {}
  for path, h in jax.tree_util.tree_flatten_with_path(captured["intermediates"])[0]:
    name = "/".join(str(getattr(k, "key", k)) for k in path[:-2])  # drop '__call__', 0
    out[name] = h.reshape((h.shape[0], -1)).astype(jnp.float32)
  return out


def _normalized_gram(h: jax.Array) -> jax.Array:
  """The centred Gram matrix of h (N, D), scaled to unit Frobenius norm: linear CKA between two
  representations is the inner product of theirs."""
  h = h - h.mean(0, keepdims=True)
  gram = h @ h.T  # (N, N)
  return gram / jnp.maximum(jnp.linalg.norm(gram), 1e-30)


def make_cka(exp) -> PopulationDiagnostic:
  """Linear CKA between every pair of members (`pairs`: members x members x layers) and between
  every pair of layers within each member (`layers_within`: members x layers x layers), on
  every Dense/Conv layer's output for the probe, flattened per example. Computed from each
  representation's centred Gram matrix (probe x probe), so layers of any width compare.
  Scalars: `<layer>/mean_across_members`, the mean CKA over distinct pairs of members."""
  params = abstract_params(exp)
  if params is None:
    raise ConfigError("diagnostics.cka: the model's init does not trace on this data.")
  probe = abstract_probe(exp)
  layers = list(jax.eval_shape(
      lambda p, s, x: _layer_outputs(exp.model.apply, p, s, x, jax.random.PRNGKey(0)),
      params, abstract_model_state(exp), probe["x"]))
  if not layers:
    raise ConfigError("diagnostics.cka compares Dense/Conv layer outputs; this model has none "
                      "(flax.linen Dense, Conv or ConvTranspose).")

  def grams(state, x, rng):  # (layers, N, N)
    out = _layer_outputs(state.apply_fn, state.params, state.model_state, x, rng)
    return jnp.stack([_normalized_gram(out[name]) for name in layers])

  def compute(states, probe, rng):
    g = _over_members(grams, states, probe["x"], rng)  # (M, L, N, N)
    pairs = jnp.einsum("alij,blij->abl", g, g)  # (M, M, L)
    within = jnp.einsum("akij,alij->akl", g, g)  # (M, L, L)
    m = g.shape[0]
    off = 1.0 - jnp.eye(m)
    mean = jnp.einsum("abl,ab->l", pairs, off) / max(m * (m - 1), 1)
    scalars = {f"{name}/mean_across_members": mean[i] for i, name in enumerate(layers)}
    return scalars, {"pairs": pairs, "layers_within": within}

  # The layers' names are in the scalars' (`<layer>/mean_across_members`, in layer order): the
  # npz holds numbers only.
  return PopulationDiagnostic(compute, draw=draw_cka)


def draw_cka(arrays: dict[str, np.ndarray], scalars: dict[str, float] | None = None
             ) -> dict[str, Figure]:
  """`pairs`: a members x members heat map per layer; `layers`: the layer x layer matrix,
  averaged over members. Layers are named from `scalars` (as written), else numbered."""
  pairs, within = arrays["pairs"], arrays["layers_within"]
  suffix = "/mean_across_members"
  layers = [k[:-len(suffix)] for k in (scalars or {}) if k.endswith(suffix)]
  if len(layers) != pairs.shape[-1]:
    layers = [f"layer {i}" for i in range(pairs.shape[-1])]
  fig = figures.new_figure(2.6 * len(layers) + 0.6, 2.9, margins=(0.45, 0.1, 0.45, 0.35))
  for i, name in enumerate(layers):
    ax = fig.add_subplot(1, len(layers), i + 1)
    image = ax.imshow(pairs[:, :, i], vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"{name}", fontsize="small")
    ax.set_xlabel("member")
    if i == 0:
      ax.set_ylabel("member")
  fig.colorbar(image, ax=fig.axes, shrink=0.8, label="linear CKA")
  layer_fig = figures.new_figure(3.6, 3.2, margins=(0.9, 0.1, 0.9, 0.35))
  ax = layer_fig.add_subplot()
  image = ax.imshow(within.mean(0), vmin=0, vmax=1, cmap="viridis")
  ax.set_xticks(range(len(layers)), layers, rotation=60, fontsize="x-small")
  ax.set_yticks(range(len(layers)), layers, fontsize="x-small")
  ax.set_title("layer x layer CKA (mean over members)", fontsize="small")
  layer_fig.colorbar(image, ax=ax, shrink=0.8)
  return {"pairs": fig, "layers": layer_fig}


# --- Mode connectivity -------------------------------------------------------------------------


def pair_indices(members: int, max_pairs: int) -> np.ndarray:
  """The pairs compared: all (i, j), i < j, where there are at most `max_pairs` of them; else each
  member with the first, (0, j). (pairs, 2)."""
  every = [(i, j) for i in range(members) for j in range(i + 1, members)]
  if len(every) > max_pairs:
    every = [(0, j) for j in range(1, members)]
  return np.asarray(every, np.int32).reshape(-1, 2)


def make_mode_connectivity(exp, points: int = 11, max_pairs: int = 28
                           ) -> PopulationDiagnostic:
  """For pairs of members (all pairs up to `max_pairs`, else each member with the first), the
  probe's mean loss (and every other per-example metric of the loss, such as accuracy) at
  `points` evenly spaced points on the straight line from one member's weights to the other's
  (parameters and state collections such as BatchNorm statistics alike, in the first member's
  hyperparameters), and the barrier: the highest loss on the line minus the mean of the two
  ends. Scalars: `mean_barrier`, `max_barrier`."""
  check_int("diagnostics.mode_connectivity.points", points, low=2,
            hint="the points on the line, both ends included.")
  check_int("diagnostics.mode_connectivity.max_pairs", max_pairs, low=1,
            hint="past it, each member is compared with the first only.")
  alphas = np.linspace(0.0, 1.0, points, dtype=np.float32)
  names = _loss_metric_names(exp)

  def on_line(states, i, j, probe, rng):  # {metric: (points,)} on the line from i to j
    a = jax.tree_util.tree_map(lambda leaf: leaf[i], states.replace(step=None))
    b = jax.tree_util.tree_map(lambda leaf: leaf[j], states.replace(step=None))
    loss = exp.loss_for(a.hparams)

    def at(alpha):
      mix = lambda x, y: (x + alpha * (y - x)).astype(x.dtype) if jnp.issubdtype(
          x.dtype, jnp.floating) else x
      params = jax.tree_util.tree_map(mix, a.params, b.params)
      model_state = jax.tree_util.tree_map(mix, a.model_state, b.model_state)
      per = loss.per_example(params, bound_apply(states.apply_fn, model_state), probe, rng)
      return {k: jnp.mean(per[k]) for k in names}

    return jax.lax.map(at, jnp.asarray(alphas))

  def compute(states, probe, rng):
    members = jax.tree_util.tree_leaves(states.params)[0].shape[0]
    pairs = pair_indices(members, max_pairs)
    curves = jax.vmap(on_line, in_axes=(None, 0, 0, None, None))(
        states, pairs[:, 0], pairs[:, 1], probe, rng)  # {metric: (pairs, points)}
    losses = curves["loss"]
    barrier = jnp.max(losses, axis=1) - 0.5 * (losses[:, 0] + losses[:, -1])
    arrays = {"pairs": jnp.asarray(pairs), "alphas": jnp.asarray(alphas), "barrier": barrier,
              **{k: curves[k] for k in names}}
    return {"mean_barrier": jnp.mean(barrier), "max_barrier": jnp.max(barrier)}, arrays

  return PopulationDiagnostic(compute, draw=draw_mode_connectivity,
                              static={"metrics": np.asarray(names)})


def _loss_metric_names(exp) -> list[str]:
  """The loss's per-example metrics (`loss` first), from an abstract trace."""
  params = abstract_params(exp)
  if params is None:
    raise ConfigError("diagnostics.mode_connectivity: the model's init does not trace here.")
  per = jax.eval_shape(
      lambda p, s, probe: exp.loss_for(exp.hparams).per_example(
          p, bound_apply(exp.model.apply, s), probe, jax.random.PRNGKey(0)),
      params, abstract_model_state(exp), abstract_probe(exp))
  return ["loss", *sorted(k for k in per if k != "loss")]


def draw_mode_connectivity(arrays: dict[str, np.ndarray], scalars: dict[str, float] | None = None
                           ) -> dict[str, Figure]:
  """Each metric along the line, one curve per pair; the loss panel's title gives the mean
  barrier."""
  metrics, alphas, pairs = list(arrays["metrics"]), arrays["alphas"], arrays["pairs"]
  fig = figures.new_figure(3.4 * len(metrics), 3.0, margins=(0.55, 0.1, 0.5, 0.35))
  for k, name in enumerate(metrics):
    ax = fig.add_subplot(1, len(metrics), k + 1)
    for p, (i, j) in enumerate(pairs):
      ax.plot(alphas, arrays[name][p], lw=1, alpha=0.7, label=f"{i}-{j}")
    ax.set_xlabel("interpolation (0: first member, 1: second)")
    ax.set_ylabel(name)
    if name == "loss":
      ax.set_title(f"mean barrier {float(np.mean(arrays['barrier'])):.4g}", fontsize="small")
  if len(pairs) <= 10:
    fig.axes[0].legend(fontsize="x-small", title="pair")
  fig.subplots_adjust(wspace=0.35)
  return {"line": fig}


# --- Ensembles ---------------------------------------------------------------------------------


def calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
  """Expected calibration error of (N, C) probabilities: the examples binned by confidence (the
  top probability) into `bins` equal-width bins of [0, 1] (right-closed, the first also takes
  0), the mean over bins of |accuracy - mean confidence| weighted by the bin's share of
  examples. numpy; the diagnostic computes the same on the device."""
  confidence = probs.max(-1)
  correct = probs.argmax(-1) == labels
  which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
  total = 0.0
  for b in range(bins):
    inside = which == b
    if inside.any():
      total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
  return float(total)


def _calibration_error(probs: jax.Array, labels: jax.Array, bins: int) -> jax.Array:
  confidence = probs.max(-1)
  correct = (probs.argmax(-1) == labels).astype(jnp.float32)
  which = jnp.clip(jnp.ceil(confidence * bins).astype(jnp.int32) - 1, 0, bins - 1)
  gap = jnp.zeros(bins).at[which].add(correct - confidence)
  return jnp.sum(jnp.abs(gap)) / probs.shape[0]


def make_ensemble(exp, bins: int = 15) -> PopulationDiagnostic:
  """The ensemble (the members' softmax probabilities averaged) against each member alone, on the
  probe: accuracy, negative log-likelihood (nats per example) and expected calibration error
  (`bins` equal-width confidence bins, see `calibration_error`); and the rate at which two
  members' predicted classes differ (`disagreement`, members x members). Arrays also hold
  every member's probabilities and the labels, so each number can be checked from the file.
  Classifiers only."""
  require_classifier(exp, "ensemble")
  check_int("diagnostics.ensemble.bins", bins, low=1, hint="equal-width confidence bins.")

  def probabilities(state, x, rng):
    logits = bound_apply(state.apply_fn, state.model_state)(
        {"params": state.params}, x, train=False, rngs=model_rngs(rng))
    return jax.nn.softmax(logits.astype(jnp.float32), -1)

  def metrics(probs, labels):
    p_true = jnp.take_along_axis(probs, labels[:, None], -1)[:, 0]
    return {"accuracy": jnp.mean(probs.argmax(-1) == labels),
            "nll": -jnp.mean(jnp.log(jnp.maximum(p_true, 1e-30))),
            "ece": _calibration_error(probs, labels, bins)}

  def compute(states, probe, rng):
    probs = _over_members(probabilities, states, probe["x"], rng)  # (M, N, C)
    labels = probe["y"]
    each = jax.vmap(metrics, in_axes=(0, None))(probs, labels)  # {name: (M,)}
    together = metrics(probs.mean(0), labels)
    predicted = probs.argmax(-1)  # (M, N)
    disagree = jnp.mean(predicted[:, None, :] != predicted[None, :, :], -1)  # (M, M)
    m = probs.shape[0]
    mean_disagree = jnp.sum(disagree) / max(m * (m - 1), 1)
    scalars = {**{f"ensemble_{k}": v for k, v in together.items()},
               **{f"member_mean_{k}": jnp.mean(v) for k, v in each.items()},
               "disagreement": mean_disagree}
    arrays = {"probs": probs, "labels": labels, "disagreement": disagree,
              **{f"member_{k}": v for k, v in each.items()},
              **{f"ensemble_{k}": v for k, v in together.items()}}
    return scalars, arrays

  return PopulationDiagnostic(compute, draw=draw_ensemble, static={"bins": np.asarray(bins)})


def draw_ensemble(arrays: dict[str, np.ndarray], scalars: dict[str, float] | None = None
                  ) -> dict[str, Figure]:
  """Each member's accuracy and NLL against the ensemble's, and the disagreement matrix."""
  fig = figures.new_figure(9.6, 3.0, margins=(0.55, 0.1, 0.5, 0.35))
  for k, name in enumerate(("accuracy", "nll")):
    ax = fig.add_subplot(1, 3, k + 1)
    values = arrays[f"member_{name}"]
    ax.bar(range(len(values)), values, color="0.6", label="member")
    ax.axhline(float(arrays[f"ensemble_{name}"]), color="C3", label="ensemble")
    ax.set_xlabel("member")
    ax.set_ylabel(name)
    if k == 0:
      ax.legend(fontsize="x-small")
  ax = fig.add_subplot(1, 3, 3)
  image = ax.imshow(arrays["disagreement"], vmin=0, cmap="magma")
  ax.set_title("disagreement rate", fontsize="small")
  fig.colorbar(image, ax=ax, shrink=0.8)
  return {"ensemble": fig}
