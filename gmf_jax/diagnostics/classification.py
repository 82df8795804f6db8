"""Diagnostics of classifiers."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from gmf_jax.diagnostics import figures
from gmf_jax.diagnostics.base import Diagnostic
from gmf_jax.diagnostics.requirements import require_classifier
from gmf_jax.models.variables import state_apply


def make_confusion_matrix(exp) -> Diagnostic:
  """Counts of (true label, predicted label) over the probe set; rows are true labels."""
  require_classifier(exp, "confusion_matrix")
  num_classes = exp.dataset.num_classes

  def compute(state, probe, rng):
    logits = state_apply(state)({"params": state.params}, probe["x"], train=False)
    pred = jnp.argmax(logits, -1)
    matrix = jnp.zeros((num_classes, num_classes), jnp.int32).at[probe["y"], pred].add(1)
    accuracy = jnp.trace(matrix) / jnp.maximum(jnp.sum(matrix), 1)
    return {"accuracy": accuracy}, {"matrix": matrix}

  return Diagnostic(compute, draw=draw_confusion_matrix)


def draw_confusion_matrix(arrays: dict[str, np.ndarray],
                          scalars: dict[str, float] | None = None) -> dict[str, Figure]:
  """The matrix as a heat map, with counts in the cells up to 20 classes."""
  matrix = arrays["matrix"]  # (C, C)
  accuracy = np.trace(matrix) / max(matrix.sum(), 1)
  fig = figures.new_figure(4.8, 4.2, margins=(0.6, 0.1, 0.55, 0.35))
  ax = fig.add_subplot()
  image = ax.imshow(matrix, cmap="Blues")
  fig.colorbar(image, ax=ax)
  if len(matrix) <= 20:
    for (i, j), count in np.ndenumerate(matrix):
      if count:
        ax.text(j, i, str(count), ha="center", va="center", fontsize="x-small",
                color="white" if count > matrix.max() / 2 else "black")
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  ax.set_title(f"confusion (probe accuracy {accuracy:.3f})")
  return {"matrix": fig}
