"""Linear algebra of a network: per-example Jacobians, their spectra, and Hessian spectra.

Everything here is pure JAX and jit-able. Functions (`fn`, `loss_fn`) and sizes (`k`,
`num_iters`, `num_samples`, `mode`, `which`) are static: bind them with `functools.partial`
before `jax.jit`, e.g.

    eigs = jax.jit(functools.partial(top_hessian_eigenvalues, loss_fn, k=3))(params, rng)

A `loss_fn` is `params -> scalar`; close over the batch (and any rng) it needs. The Hessian tools
never form the dense Hessian: they only use Hessian-vector products (forward-over-reverse).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

Params = Any  # a pytree of arrays
Mode = Literal["auto", "fwd", "rev"]

DEFAULT_REL_TOL = 1e-3  # singular values below this fraction of s_max don't count as dimensions


# ---------------------------------------------------------------------------------------------
# Jacobians
# ---------------------------------------------------------------------------------------------


def choose_mode(d_in: int, d_out: int) -> Literal["fwd", "rev"]:
  """The cheaper autodiff mode for a full Jacobian of a map R^d_in -> R^d_out.

  Forward mode costs one JVP per input dimension, reverse mode one VJP per output dimension
  (plus storing the forward pass), so ties go to forward.

  Args:
    d_in: number of inputs (flattened).
    d_out: number of outputs (flattened).

  Returns:
    "fwd" for tall maps (d_in <= d_out, e.g. a decoder z -> x), else "rev" (wide maps, e.g. an
    encoder x -> z or a classifier).
  """
  return "fwd" if d_in <= d_out else "rev"


def jacobian(fn: Callable[[jax.Array], jax.Array], x: jax.Array, mode: Mode = "auto") -> jax.Array:
  """Per-example Jacobians of `fn` over a batch, flattened to matrices.

  Args:
    fn: maps ONE example of shape in_shape to an array of shape out_shape.
    x: a batch of examples, shape (B, *in_shape).
    mode: "fwd" (`jax.jacfwd`), "rev" (`jax.jacrev`) or "auto" (`choose_mode`).

  Returns:
    J of shape (B, prod(out_shape), prod(in_shape)): J[b, i, j] = d fn(x[b])_i / d x[b]_j.
  """
  if mode not in ("auto", "fwd", "rev"):
    raise ValueError(f"mode must be 'auto', 'fwd' or 'rev'; got {mode!r}.")
  batch, in_shape = x.shape[0], x.shape[1:]
  out = jax.eval_shape(fn, jax.ShapeDtypeStruct(in_shape, x.dtype))  # no FLOPs, shapes only
  if not hasattr(out, "shape"):
    raise TypeError(f"fn must return one array; it returns {out!r}.")
  d_in, d_out = math.prod(in_shape), math.prod(out.shape)
  if mode == "auto":
    mode = choose_mode(d_in, d_out)

  def flat_fn(x_flat: jax.Array) -> jax.Array:  # (N,) -> (M,)
    return jnp.reshape(fn(x_flat.reshape(in_shape)), (d_out,))

  jac = jax.jacfwd(flat_fn) if mode == "fwd" else jax.jacrev(flat_fn)
  return jax.vmap(jac)(x.reshape((batch, d_in)))  # (B, M, N)


def singular_values(J: jax.Array) -> jax.Array:
  """Singular values of each Jacobian in a batch.

  Args:
    J: (B, M, N) per-example Jacobians.

  Returns:
    (B, min(M, N)) singular values, descending.
  """
  return jnp.linalg.svd(J, compute_uv=False)  # (B, K), K = min(M, N)


def jacobian_stats(
    J: jax.Array, rel_tol: float = DEFAULT_REL_TOL, eps: float = 0.0,
    s: jax.Array | None = None,
) -> dict[str, jax.Array]:
  """Scalar summaries of each per-example Jacobian, from its singular values.

  Args:
    J: (B, M, N) per-example Jacobians (as returned by `jacobian`).
    rel_tol: `effective_dim` counts singular values above `rel_tol * s_max` (default 1e-3).
    eps: singular values <= eps count as exactly zero: the condition number is then inf and
      `log_volume` is -inf. The default 0 trusts the SVD; in float32 a rank-deficient J gives
      s_min ~ 1e-7 * s_max rather than 0, so pass e.g. 1e-6 * typical s_max to catch those.
    s: `singular_values(J)`, when the caller has it already (saves a second SVD).

  Returns:
    A dict of (B,) arrays:
      frobenius_norm: ||J||_F = sqrt(sum s_i^2).
      spectral_norm: s_max, the largest local stretch.
      condition_number: s_max / s_min over the min(M, N) singular values; inf if s_min <= eps.
      effective_dim: the number of singular values > rel_tol * s_max (int32), the local
        dimension of the image (tall maps) or of the directions the map is sensitive to (wide).
      log_volume (only for tall maps, M >= N): 0.5 * log det(J^T J) = sum(log s_i), the log of
        the local volume change of a decoder-like map; -inf where some s_i <= eps.
  """
  _, m, n = J.shape
  s = singular_values(J) if s is None else s  # (B, K), descending
  s_max, s_min = s[:, 0], s[:, -1]  # (B,), (B,)
  is_zero = s <= eps  # (B, K)
  # Where s_min is (treated as) zero, divide by 1 instead and overwrite, so no 0/0 NaN appears.
  min_zero = is_zero[:, -1]  # (B,)
  cond = jnp.where(min_zero, jnp.inf, s_max / jnp.where(min_zero, 1.0, s_min))  # (B,)
  stats = {
      "frobenius_norm": jnp.sqrt(jnp.sum(jnp.square(s), axis=-1)),  # (B,)
      "spectral_norm": s_max,
      "condition_number": cond,
      "effective_dim": jnp.sum(s > rel_tol * s_max[:, None], axis=-1).astype(jnp.int32),  # (B,)
  }
  if m >= n:
    log_s = jnp.where(is_zero, -jnp.inf, jnp.log(jnp.where(is_zero, 1.0, s)))  # (B, K)
    stats["log_volume"] = jnp.sum(log_s, axis=-1)  # (B,)
  return stats


# ---------------------------------------------------------------------------------------------
# Hessians
# ---------------------------------------------------------------------------------------------


def hvp(loss_fn: Callable[[Params], jax.Array], params: Params, v: Params) -> Params:
  """Hessian-vector product H v of a scalar loss, forward-over-reverse.

  Args:
    loss_fn: params -> scalar loss.
    params: the point at which the Hessian is taken (a pytree).
    v: a tangent with the structure of params.

  Returns:
    H v, with the structure of params.
  """
  return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def _flat_hvp(
    loss_fn: Callable[[Params], jax.Array], params: Params
) -> tuple[jax.Array, Callable[[jax.Array], Params], Callable[[jax.Array], jax.Array]]:
  """The flattened parameters (P,), their unravel, and a flat v -> H v linearized once.

  `jax.linearize` runs the gradient's forward pass once, so each later product costs only the
  linear (JVP) part, which matters when Lanczos or Hutchinson call it tens of times. The flat
  vector is at least float32 (unravel casts back to each leaf's dtype), so half-precision
  parameters don't make the Lanczos recurrence or the probe averages half precision too.
  """
  flat, unravel = ravel_pytree(params)  # (P,)
  flat = flat.astype(jnp.promote_types(flat.dtype, jnp.float32))
  _, matvec = jax.linearize(jax.grad(lambda f: loss_fn(unravel(f))), flat)
  return flat, unravel, matvec


def _normalize(v: jax.Array) -> jax.Array:
  """v / ||v||, or v itself if it is zero (no NaN)."""
  norm = jnp.linalg.norm(v)
  return v / jnp.where(norm > 0, norm, 1.0)


def lanczos_tridiagonal(
    matvec: Callable[[jax.Array], jax.Array], v0: jax.Array, restart: jax.Array, num_iters: int
) -> tuple[jax.Array, jax.Array]:
  """Lanczos with full reorthogonalization on a symmetric operator; returns the tridiagonal T.

  On breakdown at step i (an invariant Krylov subspace, beta ~ 0) it restarts from
  `roll(restart, i)` orthogonalized against the basis so far, and records beta = 0, so T stays
  block diagonal and, with num_iters = P, holds the exact spectrum (multiplicities included).
  The cyclic shifts of a random vector are linearly independent with probability 1, and
  shifting one pre-drawn vector keeps random-number generation out of the loop (it dominated
  compile time). Memory: the (num_iters, P) basis.

  Args:
    matvec: v -> A v for a symmetric A of size P x P, on (P,) vectors.
    v0: (P,) starting vector (need not be normalized; nonzero).
    restart: (P,) random vector, independent of v0, for restarts.
    num_iters: static number of steps m <= P.

  Returns:
    (alphas, betas): the (m,) diagonal and (m - 1,) off-diagonal of T.
  """
  m, p = num_iters, v0.shape[0]
  dtype = v0.dtype
  # beta below rounding level of ||A|| means the Krylov space is (numerically) invariant.
  tiny = float(jnp.finfo(dtype).eps) * math.sqrt(p)

  def orthogonalize(w: jax.Array, basis: jax.Array) -> jax.Array:
    # Classical Gram-Schmidt twice ("twice is enough"); unfilled rows of basis are zero.
    w = w - basis.T @ (basis @ w)  # (P,)
    return w - basis.T @ (basis @ w)

  def step(i, carry):
    basis, alphas, betas, scale = carry  # (m, P), (m,), (m,), ()
    v = basis[i]  # (P,)
    w = matvec(v)  # (P,)
    alpha = jnp.vdot(v, w)
    # Projecting out every basis vector also removes alpha v_i and beta v_{i-1} (the three-term
    # recurrence), and keeps the basis orthogonal in finite precision.
    w = orthogonalize(w, basis)
    beta = jnp.linalg.norm(w)
    scale = jnp.maximum(scale, jnp.maximum(jnp.abs(alpha), beta))  # running estimate of ||A||
    broke = beta <= tiny * scale  # also true when A = 0 (scale = 0)

    def fresh(_):
      return _normalize(orthogonalize(jnp.roll(restart, i), basis))  # (P,)

    # The guard matters under vmap, where cond runs both branches and selects.
    v_next = lax.cond(broke, fresh, lambda _: w / jnp.where(broke, 1.0, beta), None)
    basis = basis.at[i + 1].set(v_next, mode="drop")  # the last step's v_next is not needed
    alphas = alphas.at[i].set(alpha)
    betas = betas.at[i].set(jnp.where(broke, 0.0, beta))
    return basis, alphas, betas, scale

  basis = jnp.zeros((m, p), dtype).at[0].set(_normalize(v0))  # (m, P)
  init = (basis, jnp.zeros((m,), dtype), jnp.zeros((m,), dtype), jnp.zeros((), dtype))
  _, alphas, betas, _ = lax.fori_loop(0, m, step, init)
  return alphas, betas[: m - 1]


def _select(eigs: jax.Array, k: int, which: str) -> jax.Array:
  """The k eigenvalues of an ascending array by `which` (see `top_hessian_eigenvalues`)."""
  if which == "LA":
    return eigs[::-1][:k]  # (k,)
  order = jnp.argsort(-jnp.abs(eigs), stable=True)  # "LM"
  return eigs[order[:k]]  # (k,)


def top_hessian_eigenvalues(
    loss_fn: Callable[[Params], jax.Array],
    params: Params,
    rng: jax.Array,
    k: int = 1,
    num_iters: int = 30,
    which: Literal["LA", "LM"] = "LA",
) -> jax.Array:
  """Top-k Hessian eigenvalues of a scalar loss by Lanczos, without forming the Hessian.

  Lanczos with full reorthogonalization runs m = min(num_iters, P) steps on the flattened
  parameters (P of them); the eigenvalues of the m x m tridiagonal matrix (Ritz values)
  approximate the extreme eigenvalues, best at the ends of the spectrum. With m = P they are
  exact up to rounding. Costs m Hessian-vector products and O(m P) memory.

  Args:
    loss_fn: params -> scalar loss.
    params: where the Hessian is taken (a pytree).
    rng: key for the random start (and restarts on breakdown).
    k: how many eigenvalues, k <= m (static).
    num_iters: Lanczos steps (static), capped at P.
    which: "LA" for the largest algebraic (default; sorted descending) or "LM" for the largest
      magnitude (signed values, sorted by descending magnitude).

  Returns:
    (k,) eigenvalues.
  """
  # Check the static arguments before tracing anything.
  if which not in ("LA", "LM"):
    raise ValueError(f"which must be 'LA' (largest algebraic) or 'LM' (largest magnitude); "
                     f"got {which!r}.")
  m = min(num_iters, sum(math.prod(jnp.shape(x)) for x in jax.tree.leaves(params)))
  if not 1 <= k <= m:
    raise ValueError(f"k={k} must be in [1, min(num_iters, num_params)] = [1, {m}].")
  flat, _, matvec = _flat_hvp(loss_fn, params)
  v0, restart = jax.random.normal(rng, (2, *flat.shape), flat.dtype)  # (P,), (P,)
  alphas, betas = lanczos_tridiagonal(matvec, v0, restart, m)
  tri = jnp.diag(alphas) + jnp.diag(betas, 1) + jnp.diag(betas, -1)  # (m, m)
  return _select(jnp.linalg.eigvalsh(tri), k, which)  # eigvalsh: ascending, (m,) -> (k,)


def power_iteration(
    loss_fn: Callable[[Params], jax.Array], params: Params, rng: jax.Array, num_iters: int = 100
) -> tuple[jax.Array, Params]:
  """The Hessian eigenvalue of largest magnitude and its eigenvector, by power iteration.

  Simpler than Lanczos but slower to converge (error shrinks like |l2 / l1|^num_iters), and it
  does not converge if both +l and -l are extreme eigenvalues.

  Args:
    loss_fn: params -> scalar loss.
    params: where the Hessian is taken (a pytree).
    rng: key for the random start.
    num_iters: iterations (static).

  Returns:
    (eigenvalue, eigvec): the Rayleigh quotient v^T H v (signed) and the unit vector v, a pytree
    like params.
  """
  flat, unravel, matvec = _flat_hvp(loss_fn, params)
  v0 = _normalize(jax.random.normal(rng, flat.shape, flat.dtype))  # (P,)

  def step(_, v: jax.Array) -> jax.Array:
    w = matvec(v)  # (P,)
    norm = jnp.linalg.norm(w)
    # H v = 0 means v is an eigenvector for 0: keep it rather than divide by zero.
    return jnp.where(norm > 0, w / jnp.where(norm > 0, norm, 1.0), v)

  v = lax.fori_loop(0, num_iters, step, v0)  # (P,)
  return jnp.vdot(v, matvec(v)), unravel(v)


def hutchinson_trace(
    loss_fn: Callable[[Params], jax.Array],
    params: Params,
    rng: jax.Array,
    num_samples: int = 100,
    batch_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Hutchinson's estimate of the Hessian trace, with Rademacher probes.

  Each probe v (entries +-1) gives an unbiased sample v^T H v of tr(H), with variance
  2 * sum_{i != j} H_ij^2 (zero for a diagonal Hessian).

  Args:
    loss_fn: params -> scalar loss.
    params: where the Hessian is taken (a pytree).
    rng: key for the probes.
    num_samples: number of probes, >= 2 (static).
    batch_size: probes per vectorized batch (static); None runs them one at a time (memory
      O(P)), larger values trade memory for speed.

  Returns:
    (estimate, stderr): the mean of v^T H v and its standard error, std(ddof=1) / sqrt(N).
  """
  if num_samples < 2:
    raise ValueError(f"num_samples={num_samples} must be >= 2 to give a standard error.")
  flat, _, matvec = _flat_hvp(loss_fn, params)

  def sample(key: jax.Array) -> jax.Array:
    v = jax.random.rademacher(key, flat.shape, flat.dtype)  # (P,)
    return jnp.vdot(v, matvec(v))

  keys = jax.random.split(rng, num_samples)  # (N,) keys
  samples = lax.map(sample, keys, batch_size=batch_size)  # (N,)
  return jnp.mean(samples), jnp.std(samples, ddof=1) / math.sqrt(num_samples)
