"""Similarity of representations: linear CKA (Kornblith et al. 2019), in numpy.

The `cka` diagnostic computes the same for every pair of a population's members on the device
(`gmf_jax.diagnostics.population`); this is the plain formula, for two arrays on the host.
"""

from __future__ import annotations

import numpy as np


def linear_cka(x, y) -> float:
  """Linear centred kernel alignment between two representations of the same examples.

      CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)

  with Xc, Yc the column-centred inputs. 1 for identical representations; unchanged by an
  orthogonal transform or an isotropic scaling of either; in [0, 1].

  Args:
    x: (examples, features) array; a layer's outputs, flattened per example.
    y: (examples, other features) array, the same examples in the same order.

  Returns:
    The similarity, a float (computed in float64).

  Raises:
    ValueError: inputs that are not 2-D, differ in their number of examples, have fewer than
      two examples, or one of them is constant (no variance to compare).
  """
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 2 or y.ndim != 2:
    raise ValueError(f"linear_cka takes (examples, features) arrays; got shapes {x.shape} and "
                     f"{y.shape} (flatten each example's features first).")
  if len(x) != len(y) or len(x) < 2:
    raise ValueError(f"linear_cka needs the same examples (at least 2) in both; got {len(x)} "
                     f"and {len(y)}.")
  x, y = x - x.mean(0), y - y.mean(0)
  norm_x, norm_y = np.linalg.norm(x.T @ x), np.linalg.norm(y.T @ y)
  if norm_x == 0 or norm_y == 0:
    raise ValueError("linear_cka: a representation is constant over the examples; CKA is "
                     "undefined.")
  return float(np.linalg.norm(y.T @ x) ** 2 / (norm_x * norm_y))
