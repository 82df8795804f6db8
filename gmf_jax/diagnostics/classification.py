"""Diagnostics of classifiers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gmf_jax.diagnostics import figures
from gmf_jax.diagnostics.base import DiagnosticResult, to_host
from gmf_jax.diagnostics.requirements import require_classifier


def make_confusion_matrix(exp):
  """Counts of (true label, predicted label) over the probe set; rows are true labels."""
  require_classifier(exp, "confusion_matrix")
  num_classes = exp.dataset.num_classes

  @jax.jit
  def compute(params, x, y):
    logits = exp.model.apply({"params": params}, x, train=False)
    pred = jnp.argmax(logits, -1)
    return jnp.zeros((num_classes, num_classes), jnp.int32).at[y, pred].add(1)

  def run(state, probe, rng):
    matrix = to_host(compute(state.params, probe["x"], probe["y"]))
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)

    def draw():
      fig = figures.new_figure(4.8, 4.2, margins=(0.6, 0.1, 0.55, 0.35))
      ax = fig.add_subplot()
      image = ax.imshow(matrix, cmap="Blues")
      fig.colorbar(image, ax=ax)
      if num_classes <= 20:
        for (i, j), count in np.ndenumerate(matrix):
          if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize="x-small",
                    color="white" if count > matrix.max() / 2 else "black")
      ax.set_xlabel("predicted")
      ax.set_ylabel("true")
      ax.set_title(f"confusion (probe accuracy {accuracy:.3f})")
      return fig

    return DiagnosticResult(scalars={"accuracy": float(accuracy)}, arrays={"matrix": matrix},
                            figures={"matrix": draw})

  return run
