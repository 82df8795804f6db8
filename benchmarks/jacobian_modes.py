"""Per-example Jacobians: the mode `gmf_jax.diagnostics.linalg.jacobian` picks vs the other one.

For the VAEs of the shipped configs, built from their own `model` settings: the default job
(configs/vae.py: MLPVAE on 8x8x1 digits, latent 8, hidden (256, 128)) and the MNIST one
(configs/vae_mnist.py: 28x28x1, latent 16, hidden (512, 256)), times the per-example Jacobians of
  decoder  z -> x      (tall: D_in < D_out, auto picks forward mode, the wrong one is reverse)
  encoder  x -> mean   (wide: D_in > D_out, auto picks reverse mode, the wrong one is forward)
on a probe batch of latents / images. Each is jitted with the parameters as an argument (as a
diagnostic during training would be); compilation is excluded, then each call is timed
(blocking on the result), alternating the two modes, and the median is reported.

Acceptance: on a VAE decoder, auto is at least 10x faster than the wrong mode. It is checked on
the MNIST VAE (configs/vae_mnist.py). On the default job's tiny decoder (8 -> 64) the
FLOP count bounds the gain at ~5.5x (printed beside each measurement), so 10x cannot happen
there; its ratio is reported, not judged.

    python benchmarks/jacobian_modes.py [--batch 256] [--repeats 15] [--inner 5]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import gmf_jax
from gmf_jax.diagnostics.linalg import choose_mode, jacobian
from gmf_jax.models import MLPVAE

MIN_SPEEDUP = 10.0  # acceptance for a VAE decoder (the MNIST one; see the docstring)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 0

Variables = Any


def jacobian_fn(model: MLPVAE, method: str, mode: str) -> Callable[[Variables, jax.Array],
                                                                   jax.Array]:
  """A jitted (variables, probes) -> (B, D_out, D_in) Jacobian of one of the model's maps."""

  def run(variables: Variables, probes: jax.Array) -> jax.Array:
    if method == "decode":
      fn = lambda z: model.apply(variables, z[None], method="decode")[0]  # (L,) -> data_shape
    else:
      fn = lambda x: model.apply(variables, x[None], method="encode")[0][0]  # data -> (L,) mean
    return jacobian(fn, probes, mode=mode)

  return jax.jit(run)


def median_ms(fn: Callable[[], jax.Array], inner: int) -> float:
  """One timing: `inner` blocking calls, in ms per call."""
  start = time.perf_counter()
  for _ in range(inner):
    jax.block_until_ready(fn())
  return 1e3 * (time.perf_counter() - start) / inner


def bench(name: str, model: MLPVAE, method: str, probes: jax.Array, variables: Variables,
          repeats: int, inner: int) -> float:
  """Times auto vs the wrong mode for one map; prints a row and returns the speedup."""
  fns = {"auto": jacobian_fn(model, method, "auto")}
  d_in = math.prod(probes.shape[1:])
  d_out = model.latent_dim if method == "encode" else math.prod(model.data_shape)
  auto = choose_mode(d_in, d_out)
  wrong = "rev" if auto == "fwd" else "fwd"
  fns["wrong"] = jacobian_fn(model, method, wrong)
  results = {}
  for key, fn in fns.items():  # compile, and check both modes give the same matrices
    results[key] = np.asarray(jax.block_until_ready(fn(variables, probes)))
  assert results["auto"].shape == (probes.shape[0], d_out, d_in), results["auto"].shape
  err = np.max(np.abs(results["auto"] - results["wrong"])) / np.max(np.abs(results["auto"]))
  times: dict[str, list[float]] = {"auto": [], "wrong": []}
  for _ in range(repeats):
    for key, fn in fns.items():  # alternate, so drift hits both alike
      times[key].append(median_ms(lambda fn=fn: fn(variables, probes), inner))
  t_auto, t_wrong = statistics.median(times["auto"]), statistics.median(times["wrong"])
  ratio = t_wrong / t_auto
  hidden = tuple(model.hidden)
  widths = (d_in, *(reversed(hidden) if method == "decode" else hidden), d_out)
  work = tangent_macs(widths)
  print(f"{name:<22} {method:<7} {d_in:>4} -> {d_out:<4} auto={auto:<3} {t_auto:9.3f} ms   "
        f"wrong={wrong:<3} {t_wrong:9.3f} ms   wrong/auto {ratio:6.2f}x (matmul work ratio "
        f"{work[wrong] / work[auto]:.1f}x)   max rel diff {err:.1e}")
  return ratio


def tangent_macs(widths: tuple[int, ...]) -> dict[str, int]:
  """Multiply-adds per example of the tangent matmuls of an MLP with these layer widths.

  Forward mode pushes d_in basis tangents through the layers, reverse mode pulls d_out basis
  cotangents back. The first layer each meets acts on an identity basis, and XLA computes that
  product once for the whole batch (it is just the weight matrix; see the optimized HLO), so
  only the other layers count. Their ratio bounds the speedup one mode can have over the other.
  """
  layers = [a * b for a, b in zip(widths[:-1], widths[1:], strict=True)]  # (in x out) per layer
  return {"fwd": widths[0] * sum(layers[1:]), "rev": widths[-1] * sum(layers[:-1])}


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else platform.processor() or "?"
  except OSError:
    return platform.processor() or "?"


def make_vae(config_file: str, data_shape: tuple[int, ...]) -> tuple[MLPVAE, Variables]:
  """The config's MLPVAE (its latent size, hidden widths and activation) for `data_shape`."""
  m = gmf_jax.load_config(os.path.join(ROOT, "configs", config_file)).model
  model = MLPVAE(data_shape=data_shape, latent_dim=m.latent_dim, hidden=tuple(m.hidden),
                 activation=m.get("activation", "relu"))
  k, k2 = jax.random.split(jax.random.PRNGKey(SEED))
  variables = model.init({"params": k, "sample": k2}, jnp.zeros((1, *data_shape)))
  return model, variables


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=256, help="probe batch size")
  parser.add_argument("--repeats", type=int, default=15, help="timings per mode (median)")
  parser.add_argument("--inner", type=int, default=5, help="calls per timing")
  args = parser.parse_args(argv)
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({cpu_name()}, "
        f"{os.cpu_count()} cores); batch {args.batch}, median of {args.repeats} x {args.inner} "
        f"calls, compile excluded")
  rng = np.random.default_rng(SEED)
  ratios = {}
  for name, config_file, data_shape in [("vae.py (8x8x1)", "vae.py", (8, 8, 1)),
                                        ("vae_mnist.py (28x28x1)", "vae_mnist.py", (28, 28, 1))]:
    model, variables = make_vae(config_file, data_shape)
    latent = model.latent_dim
    z = jnp.asarray(rng.normal(size=(args.batch, latent)), jnp.float32)  # (B, L)
    x = jnp.asarray(rng.uniform(size=(args.batch, *data_shape)), jnp.float32)  # (B, *data)
    ratios[name, "decode"] = bench(name, model, "decode", z, variables, args.repeats, args.inner)
    ratios[name, "encode"] = bench(name, model, "encode", x, variables, args.repeats, args.inner)
  small = ratios["vae.py (8x8x1)", "decode"]
  print(f"info: default-job decoder (8 -> 64), auto (fwd) is {small:.2f}x faster than rev "
        "(bounded near 5.5x by its FLOP count)")
  ratio = ratios["vae_mnist.py (28x28x1)", "decode"]
  verdict = "PASS" if ratio >= MIN_SPEEDUP else "FAIL"
  print(f"{verdict}: the MNIST VAE's decoder (16 -> 784), auto (fwd) is {ratio:.2f}x faster than "
        f"rev (acceptance >= {MIN_SPEEDUP:.0f}x)")
  return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
