"""gmf_jax.diagnostics.linalg against independent computations: finite differences, numpy SVD
and eigh of the dense Hessian, and quadratics with a known spectrum. All calls go through jit."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from gmf_jax.diagnostics import linalg

KEY = jax.random.PRNGKey(0)


def _normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
  """Test data from numpy: each eager jax.random call of a new shape costs a compile (~0.3 s)."""
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape))  # float64 iff x64 is on


def _mlp_fn(seed: int, in_shape: tuple[int, ...], out_shape: tuple[int, ...], width: int = 5):
  """A random tanh MLP from one example of in_shape to out_shape (dtype follows x64 mode)."""
  d_in, d_out = math.prod(in_shape), math.prod(out_shape)
  w1 = _normal(seed, (width, d_in)) / math.sqrt(d_in)  # (H, N)
  w2 = _normal(seed + 1, (d_out, width)) / math.sqrt(width)  # (M, H)
  return lambda x: (w2 @ jnp.tanh(w1 @ x.reshape(-1) + 0.3)).reshape(out_shape)


def _central_fd(fn, x: jax.Array, h: float = 1e-6) -> np.ndarray:
  """(B, M, N) central differences of fn over each example of x (B, *in_shape); use float64."""
  in_shape = x.shape[1:]
  n = math.prod(in_shape)
  steps = h * jnp.eye(n).reshape((1, n, *in_shape))  # (1, N, *in_shape)
  f = jax.vmap(jax.vmap(lambda xb: jnp.ravel(fn(xb))))  # (B, N, *in_shape) -> (B, N, M)
  diff = (f(x[:, None] + steps) - f(x[:, None] - steps)) / (2 * h)  # (B, N, M)
  return np.swapaxes(np.asarray(diff), 1, 2)  # (B, M, N)


# ---------------------------------------------------------------------------------------------
# Jacobians
# ---------------------------------------------------------------------------------------------


def test_choose_mode():
  assert linalg.choose_mode(8, 64) == "fwd"  # decoder z -> x: tall
  assert linalg.choose_mode(64, 8) == "rev"  # encoder / classifier: wide
  assert linalg.choose_mode(5, 5) == "fwd"  # a tie goes to forward


SHAPES = {"tall": ((3,), (2, 5)), "wide": ((4, 3), (2,))}  # (in_shape, out_shape)


@pytest.mark.parametrize("kind", ["tall", "wide"])
@pytest.mark.parametrize("mode", ["auto", "fwd", "rev"])
def test_jacobian_matches_finite_differences(kind, mode):
  in_shape, out_shape = SHAPES[kind]
  # float64 only inside this block, so central differences are accurate to ~1e-10 and x64 does
  # not leak into other tests.
  with jax.enable_x64(True):
    fn = _mlp_fn(1, in_shape, out_shape)
    x = _normal(3, (4, *in_shape))  # (B, *in_shape)
    assert x.dtype == jnp.float64
    J = jax.jit(functools.partial(linalg.jacobian, fn, mode=mode))(x)
    assert J.shape == (4, math.prod(out_shape), math.prod(in_shape))
    fd = _central_fd(fn, x)
    np.testing.assert_allclose(np.asarray(J), fd, rtol=0, atol=1e-8)


@pytest.mark.parametrize("kind", ["tall", "wide"])
def test_jacobian_fwd_rev_agree_and_auto_picks_cheap_mode(kind, monkeypatch):
  in_shape, out_shape = SHAPES[kind]
  fn = _mlp_fn(4, in_shape, out_shape)
  x = _normal(6, (6, *in_shape))  # (B, *in_shape)
  j_fwd = jax.jit(functools.partial(linalg.jacobian, fn, mode="fwd"))(x)
  j_rev = jax.jit(functools.partial(linalg.jacobian, fn, mode="rev"))(x)
  np.testing.assert_allclose(j_fwd, j_rev, rtol=1e-5, atol=1e-6)

  def forbidden(*args, **kwargs):
    raise AssertionError("auto mode used the expensive direction")

  # The tall map must not use jacrev, the wide one must not use jacfwd.
  monkeypatch.setattr(jax, "jacrev" if kind == "tall" else "jacfwd", forbidden)
  j_auto = jax.jit(functools.partial(linalg.jacobian, fn))(x)
  np.testing.assert_allclose(j_auto, j_fwd, rtol=1e-5, atol=1e-6)


def test_jacobian_rejects_bad_mode():
  with pytest.raises(ValueError, match="mode"):
    linalg.jacobian(jnp.tanh, jnp.ones((2, 3)), mode="forward")


def _matrix_with_spectrum(m: int, n: int, s: np.ndarray, seed: int) -> np.ndarray:
  """An (m, n) matrix with singular values s (length min(m, n)) and random singular vectors."""
  rng = np.random.default_rng(seed)
  u, _ = np.linalg.qr(rng.normal(size=(m, m)))
  v, _ = np.linalg.qr(rng.normal(size=(n, n)))
  k = min(m, n)
  return (u[:, :k] * s) @ v[:, :k].T  # (m, n)


@pytest.mark.parametrize("m,n", [(7, 3), (3, 7)])
def test_linear_map_stats_match_numpy(m, n):
  s_true = np.array([5.0, 1.0, 2e-4])
  w = _matrix_with_spectrum(m, n, s_true, seed=m)  # (M, N)
  w32 = jnp.asarray(w, jnp.float32)
  x = _normal(0, (2, n))  # (B, N)
  J = jax.jit(functools.partial(linalg.jacobian, lambda xb: xb @ w32.T))(x)  # (B, M, N)
  np.testing.assert_allclose(J, np.broadcast_to(w, (2, m, n)), rtol=1e-6, atol=1e-6)

  stats = jax.jit(linalg.jacobian_stats)(J)
  s_np = np.linalg.svd(w, compute_uv=False)
  np.testing.assert_allclose(linalg.singular_values(J), np.tile(s_np, (2, 1)), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(stats["spectral_norm"], s_np[0], rtol=1e-5)
  np.testing.assert_allclose(stats["frobenius_norm"], np.linalg.norm(w, "fro"), rtol=1e-5)
  # s_min = 2e-4 is resolved in float32 only to ~1e-6 absolute, hence the looser tolerance.
  np.testing.assert_allclose(stats["condition_number"], s_np[0] / s_np[-1], rtol=1e-2)
  np.testing.assert_array_equal(stats["effective_dim"], 2)  # 2e-4 < 1e-3 * 5
  np.testing.assert_array_equal(linalg.jacobian_stats(J, rel_tol=1e-5)["effective_dim"], 3)
  if m >= n:  # tall: 0.5 * log det(W^T W)
    logdet = np.linalg.slogdet(w.T @ w)[1]
    np.testing.assert_allclose(stats["log_volume"], 0.5 * logdet, atol=1e-3)
  else:
    assert "log_volume" not in stats
  assert all(v.shape == (2,) for v in stats.values())


def test_stats_of_singular_jacobian_are_inf_not_nan():
  J = jnp.zeros((2, 5, 3)).at[1, :3, :3].set(jnp.diag(jnp.array([2.0, 1.0, 0.0])))  # (B, M, N)
  stats = linalg.jacobian_stats(J)
  np.testing.assert_array_equal(stats["condition_number"], [np.inf, np.inf])
  np.testing.assert_array_equal(stats["log_volume"], [-np.inf, -np.inf])
  np.testing.assert_array_equal(stats["effective_dim"], [0, 2])
  np.testing.assert_allclose(stats["spectral_norm"], [0.0, 2.0])
  # A near-zero s_min from rounding counts as zero once eps is above it.
  J_near = J.at[1, 2, 2].set(1e-9)
  assert np.isfinite(linalg.jacobian_stats(J_near)["condition_number"][1])
  assert np.isinf(linalg.jacobian_stats(J_near, eps=1e-6)["condition_number"][1])


# ---------------------------------------------------------------------------------------------
# Hessians
# ---------------------------------------------------------------------------------------------


def _tiny_mlp_loss():
  """MSE of a 3-6-2 tanh MLP on random data: 38 parameters, an indefinite Hessian."""
  params = {
      "dense1": {"w": _normal(1, (3, 6)) * 0.7, "b": jnp.full((6,), 0.1)},
      "dense2": {"w": _normal(2, (6, 2)) * 0.5, "b": jnp.zeros((2,))},
  }
  x, y = _normal(3, (20, 3)), _normal(4, (20, 2))  # (B, 3), (B, 2)

  def loss(p):
    h = jnp.tanh(x @ p["dense1"]["w"] + p["dense1"]["b"])  # (B, 6)
    return jnp.mean(jnp.square(h @ p["dense2"]["w"] + p["dense2"]["b"] - y))

  return loss, params


def _dense_hessian(loss, params) -> np.ndarray:
  flat, unravel = ravel_pytree(params)
  return np.asarray(jax.jit(jax.hessian(lambda f: loss(unravel(f))))(flat), np.float64)  # (P, P)


@pytest.fixture(scope="module")
def mlp():
  loss, params = _tiny_mlp_loss()
  hess = _dense_hessian(loss, params)
  return loss, params, hess, np.linalg.eigh(hess)[0]  # eigenvalues ascending


def test_hvp_matches_dense_hessian(mlp):
  loss, params, hess, _ = mlp
  v = jax.tree.map(lambda p: _normal(p.size, p.shape), params)
  hv = jax.jit(functools.partial(linalg.hvp, loss))(params, v)
  assert jax.tree.structure(hv) == jax.tree.structure(params)
  np.testing.assert_allclose(ravel_pytree(hv)[0], hess @ np.asarray(ravel_pytree(v)[0]),
                             rtol=1e-4, atol=1e-5)


def test_lanczos_matches_dense_eigh_on_mlp(mlp):
  loss, params, _, eigs = mlp
  num_params = eigs.size
  scale = np.abs(eigs).max()
  assert eigs[0] < 0 < eigs[-1]  # indefinite, so "LA" and "LM" differ in what they test
  # m = P Lanczos steps: exact up to float32 rounding.
  top = jax.jit(functools.partial(linalg.top_hessian_eigenvalues, loss, k=3,
                                  num_iters=num_params))(params, KEY)
  np.testing.assert_allclose(top, eigs[::-1][:3], atol=1e-5 * scale)
  # The default m = 30 < P = 38 already pins the top eigenvalue (Ritz values converge first at
  # the ends of the spectrum).
  top1 = jax.jit(functools.partial(linalg.top_hessian_eigenvalues, loss))(params, KEY)
  np.testing.assert_allclose(top1, eigs[-1:], rtol=1e-4)


def test_power_iteration_on_mlp(mlp):
  loss, params, _, eigs = mlp
  value, vec = jax.jit(functools.partial(linalg.power_iteration, loss, num_iters=300))(params,
                                                                                       KEY)
  largest = eigs[np.argmax(np.abs(eigs))]
  np.testing.assert_allclose(value, largest, rtol=1e-4)
  assert jax.tree.structure(vec) == jax.tree.structure(params)
  np.testing.assert_allclose(np.linalg.norm(ravel_pytree(vec)[0]), 1.0, rtol=1e-5)


def _quadratic(spectrum: np.ndarray, seed: int = 0):
  """0.5 p^T A p + c^T p over params {'a': (4,), 'b': (2, 3)}, A = Q diag(spectrum) Q^T."""
  rng = np.random.default_rng(seed)
  q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
  a_mat = jnp.asarray((q * spectrum) @ q.T, jnp.float32)  # (10, 10)
  c = jnp.asarray(rng.normal(size=10), jnp.float32)
  params = {"a": jnp.ones((4,)), "b": jnp.full((2, 3), 0.5)}

  def loss(p):
    f = ravel_pytree(p)[0]  # (10,)
    return 0.5 * f @ a_mat @ f + c @ f

  return loss, params, q


def test_quadratic_with_known_spectrum():
  spectrum = np.array([-8.0, 5.0, 3.0, 3.0, 1.0, 0.5, 0.0, 0.0, -1.0, -2.0])
  loss, params, q = _quadratic(spectrum)
  # num_iters=100 is capped at P = 10 (the whole space: exact).
  top = jax.jit(functools.partial(linalg.top_hessian_eigenvalues, loss, k=4, num_iters=100))(
      params, KEY)
  np.testing.assert_allclose(top, [5.0, 3.0, 3.0, 1.0], atol=1e-4)  # repeated 3 found twice
  top_lm = jax.jit(functools.partial(linalg.top_hessian_eigenvalues, loss, k=3, num_iters=10,
                                     which="LM"))(params, KEY)
  np.testing.assert_allclose(top_lm, [-8.0, 5.0, 3.0], atol=1e-4)
  value, vec = jax.jit(functools.partial(linalg.power_iteration, loss, num_iters=200))(params,
                                                                                       KEY)
  np.testing.assert_allclose(value, -8.0, rtol=1e-5)  # largest magnitude, sign kept
  np.testing.assert_allclose(abs(np.dot(ravel_pytree(vec)[0], q[:, 0])), 1.0, atol=1e-5)


@pytest.mark.parametrize("case", ["zero", "rank_one", "isotropic"])
def test_lanczos_breakdown_gives_no_nan(case):
  """Invariant Krylov subspaces (beta ~ 0) right away: the restart keeps the spectrum exact."""
  params = {"a": jnp.arange(4.0), "b": jnp.ones((2, 3))}  # P = 10
  flat = lambda p: ravel_pytree(p)[0]  # (10,)
  loss, expected = {
      "zero": (lambda p: 2.0 * jnp.sum(flat(p)), [0.0, 0.0, 0.0]),  # linear: H = 0
      "rank_one": (lambda p: 0.5 * jnp.sum(flat(p)) ** 2, [10.0, 0.0, 0.0]),  # H = 1 1^T
      "isotropic": (lambda p: 1.5 * jnp.sum(jnp.square(flat(p))), [3.0, 3.0, 3.0]),  # H = 3 I
  }[case]
  # num_iters = P: after the breakdown, restarts must fill the rest of the space.
  top = jax.jit(functools.partial(linalg.top_hessian_eigenvalues, loss, k=3, num_iters=10))(
      params, KEY)
  assert np.all(np.isfinite(top))
  np.testing.assert_allclose(top, expected, atol=1e-4)
  value, _ = jax.jit(functools.partial(linalg.power_iteration, loss, num_iters=5))(params, KEY)
  np.testing.assert_allclose(value, expected[0], atol=1e-4)


def test_lanczos_rejects_bad_arguments(mlp):
  loss, params, _, _ = mlp
  with pytest.raises(ValueError, match="k="):
    linalg.top_hessian_eigenvalues(loss, params, KEY, k=11, num_iters=10)
  with pytest.raises(ValueError, match="which"):
    linalg.top_hessian_eigenvalues(loss, params, KEY, k=1, which="SA")
  with pytest.raises(ValueError, match="num_samples"):
    linalg.hutchinson_trace(loss, params, KEY, num_samples=1)


def test_hutchinson_trace_on_mlp(mlp):
  loss, params, hess, _ = mlp
  n = 2000
  estimate, stderr = jax.jit(functools.partial(linalg.hutchinson_trace, loss, num_samples=n,
                                               batch_size=250))(params, KEY)
  exact = np.trace(hess)
  # With Rademacher probes Var[v^T H v] = 2 * sum_{i != j} H_ij^2, so the true standard error is
  # known; the reported one (from the sample std) must agree with it to ~10% at N = 2000.
  true_stderr = math.sqrt(2 * (np.sum(hess**2) - np.sum(np.diag(hess) ** 2)) / n)
  np.testing.assert_allclose(stderr, true_stderr, rtol=0.15)
  # Tolerance: within 4 standard errors of the exact trace (a 4-sigma event has probability
  # ~6e-5; the seed is fixed anyway), and, here, within 10% relative (4 * stderr ~ 6%).
  assert abs(estimate - exact) <= 4 * true_stderr
  assert abs(estimate - exact) <= 0.1 * abs(exact)


def test_hutchinson_is_exact_for_diagonal_hessian():
  d = jnp.linspace(-1.0, 3.0, 10)  # H = diag(d): every v^T H v = tr(H) for v in {-1, 1}^P
  params = {"a": jnp.ones((4,)), "b": jnp.ones((2, 3))}
  loss = lambda p: 0.5 * jnp.sum(d * jnp.square(ravel_pytree(p)[0]))
  estimate, stderr = jax.jit(functools.partial(linalg.hutchinson_trace, loss, num_samples=8))(
      params, KEY)
  np.testing.assert_allclose(estimate, float(jnp.sum(d)), rtol=1e-6)
  np.testing.assert_allclose(stderr, 0.0, atol=1e-5)
