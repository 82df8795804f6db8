"""Diagnostics across members (issue #22): CKA as one program against a Python loop over pairs,
and the three diagnostics against one training chunk.

configs/mlp.py with `model.hidden=(64, 64)` (three Dense layers: two hidden and the logits),
digits 8x8, a probe of 256 test examples, a population of 16 members (seeds 0..15) trained
`--steps` steps first so the members differ. Compilation is excluded everywhere (each program
called once before timing); medians over `--repeats` of wall time.

  (a) CKA, one program: the `cka` diagnostic's program (all 120 pairs x 3 layers, and the layer x
      layer matrices, in one jitted call), its result brought to the host.
  (b) CKA, pairwise loop (the baseline, as a pairwise tool is used): for each of the 120 pairs a
      jitted call taking the two members' parameters, running both on the probe and returning
      the 3 layers' linear CKA, each fetched to the host.
  (c) cka, mode_connectivity (11 points; 120 pairs are over its `max_pairs`=28, so each member
      with the first: 15 pairs) and ensemble, each one program on the 16 members, against one
      training chunk of the 16-member population (`steps_per_call`=500 steps).

    python benchmarks/across_members.py [--repeats 5] [--steps 500]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import gmf_jax
from gmf_jax.diagnostics import runner
from gmf_jax.diagnostics.population import _layer_outputs, _normalized_gram
from gmf_jax.members import member
from gmf_jax.train.build import build_experiment, init_population
from gmf_jax.train.chunks import make_feed
from gmf_jax.train.loop import _stack
from gmf_jax.train.step import make_keys

MEMBERS = 16


def _timed(fn, repeats: int) -> float:
  fn()  # compiled and warm
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--steps", type=int, default=500)
  args = parser.parse_args()

  config = gmf_jax.load_config("configs/mlp.py", {"model.hidden": (64, 64)})
  with config.diagnostics.unlocked():
    config.diagnostics = {name: {} for name in ("cka", "mode_connectivity", "ensemble")}
  exp = build_experiment(config, population=MEMBERS)
  keys = _stack([make_keys(s) for s in range(MEMBERS)])
  state, keys = exp.layout.put_population(
      init_population(exp, keys, _stack([exp.hparams] * MEMBERS)), keys)
  feed = make_feed(exp, keys, state, MEMBERS)
  state, _ = feed.run(state, 0, args.steps)  # members that differ
  jax.block_until_ready(state)
  probe = runner.probe_batch(exp, config.probe_size)
  rng = jax.random.PRNGKey(0)
  programs = {d.name: jax.jit(d.diagnostic.compute) for d in exp.diagnostics}

  one = _timed(lambda: jax.device_get(programs["cka"](state, probe, rng)), args.repeats)

  layers = list(jax.eval_shape(
      lambda p: _layer_outputs(exp.model.apply, p, {}, probe["x"], rng),
      member(state, 0).params))

  @jax.jit
  def pair_cka(params_a, params_b, x):
    out_a = _layer_outputs(exp.model.apply, params_a, {}, x, rng)
    out_b = _layer_outputs(exp.model.apply, params_b, {}, x, rng)
    return jnp.stack([jnp.sum(_normalized_gram(out_a[k]) * _normalized_gram(out_b[k]))
                      for k in layers])

  members = [member(state, m).params for m in range(MEMBERS)]
  pairs = list(itertools.combinations(range(MEMBERS), 2))

  def loop():
    return [np.asarray(pair_cka(members[i], members[j], probe["x"])) for i, j in pairs]

  looped = _timed(loop, args.repeats)
  check = jax.device_get(programs["cka"](state, probe, rng))[1]["pairs"]
  got = loop()
  worst = max(float(np.max(np.abs(check[i, j] - g))) for (i, j), g in zip(pairs, got,
                                                                          strict=True))

  chunk_state = [jax.tree_util.tree_map(jnp.copy, state)]  # the chunk donates its state

  def chunk():
    chunk_state[0], metrics = feed.run(chunk_state[0], args.steps, config.steps_per_call)
    jax.block_until_ready(metrics)

  chunk_sec = _timed(chunk, args.repeats)
  diag_sec = {name: _timed(lambda p=p: jax.device_get(p(state, probe, rng)), args.repeats)
              for name, p in programs.items()}

  print(f"# {platform.node()} {jax.devices()[0].platform} x{len(jax.devices())}, "
        f"{MEMBERS} members, {len(layers)} layers ({', '.join(layers)}), probe "
        f"{probe['x'].shape[0]}")
  print(f"(a) CKA, one program:          {one * 1e3:8.1f} ms")
  print(f"(b) CKA, 120 pairwise calls:   {looped * 1e3:8.1f} ms   (b)/(a) = {looped / one:.1f}x"
        f"   (largest difference {worst:.1e})")
  print(f"(c) one training chunk ({config.steps_per_call} steps): {chunk_sec * 1e3:8.1f} ms")
  for name, sec in diag_sec.items():
    print(f"    {name:<18} {sec * 1e3:8.1f} ms = {sec / chunk_sec:.2f} chunk")
  total = sum(diag_sec.values())
  print(f"    all three          {total * 1e3:8.1f} ms = {total / chunk_sec:.2f} chunk")


if __name__ == "__main__":
  main()
