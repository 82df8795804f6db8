"""Diagnostics of a population at one step: one vmapped call per diagnostic against one call per
member.

configs/mlp.py (MLP classifier on 8x8 digits, hidden (64,), probe of 256 test examples) with
weight_stats, activation_stats and confusion_matrix, for populations of 16 and 64 members
(seeds 0..N-1, initial states). Two ways to run them at one step, writing every member's rows
(metrics.csv), npz and (where drawn) PNGs:

  vmapped     `runner.PopulationDiagnostics.run`: each diagnostic over the member axis in one
              jitted call, one transfer to the host, then the writes.
  per member  the members sliced in one call, then each diagnostic's jitted compute called on
              each member's state, its result fetched and written (the path before the vmapped
              runner: every call a dispatch and a host round trip).

Each is timed without figures (what the training loop does for a population) and, with
`--figures`, with the confusion matrix drawn per member (as the per-member path always did; the
drawing then dominates both). Compilation is excluded (both warmed up); the medians over the
repeats of wall time and of process CPU time (all threads: steadier on a shared machine) are
reported.

    python benchmarks/diagnostics_population.py [--members 16,64] [--repeats 5] [--figures]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

import gmf_jax
from gmf_jax.diagnostics import DiagnosticResult
from gmf_jax.diagnostics.runner import (
    PopulationDiagnostics,
    Target,
    diagnostic_rng,
    probe_batch,
    write_result,
)
from gmf_jax.runlog.writers import CsvWriter
from gmf_jax.train.build import build_experiment, init_population
from gmf_jax.train.step import make_keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIAGNOSTICS = ("weight_stats", "activation_stats", "confusion_matrix")
STEP = 1000


def _stack(trees):
  return jax.tree_util.tree_map(lambda *a: jnp.stack([jnp.asarray(x) for x in a]), *trees)


def _per_member(diagnostics, probe, diag_keys, state, targets, draw: bool) -> None:
  """The per-member path: slice, then per member and diagnostic a jitted call and its writes."""
  size = len(diag_keys)
  members = _unstack(size)(state.replace(step=None))
  for t in targets:
    one = members[t.index].replace(step=state.step)
    for d in diagnostics:
      diag = d.diagnostic
      scalars, arrays = jax.device_get(_jitted(diag)(one, probe,
                                                      diagnostic_rng(diag_keys[t.index], d.name,
                                                                     STEP)))
      arrays = {**diag.static, **arrays}
      figures = diag.draw(arrays, scalars) if draw and diag.draw else {}
      write_result(d.name, STEP, DiagnosticResult(scalars, arrays, figures), t.workdir,
                   t.writer)


_CACHE: dict = {}


def _jitted(diag):
  if id(diag) not in _CACHE:
    _CACHE[id(diag)] = jax.jit(diag.compute)
  return _CACHE[id(diag)]


def _unstack(size: int):
  if ("unstack", size) not in _CACHE:
    _CACHE[("unstack", size)] = jax.jit(lambda tree: tuple(
        jax.tree_util.tree_map(lambda a, i=i: a[i], tree) for i in range(size)))
  return _CACHE[("unstack", size)]


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--members", default="16,64")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--figures", action="store_true", help="also time with figures drawn")
  args = parser.parse_args(argv)
  config = gmf_jax.load_config(os.path.join(ROOT, "configs", "mlp.py"),
                               {"progress_bar": False})
  with config.diagnostics.unlocked():
    config.diagnostics = {name: {"schedule": "end"} for name in DIAGNOSTICS}
  exp = build_experiment(config)
  diagnostics = list(exp.diagnostics)
  probe = probe_batch(exp, config.probe_size)
  print(f"{platform.node()} {jax.default_backend()} ({os.cpu_count()} cores); "
        f"{', '.join(DIAGNOSTICS)}; median of {args.repeats}")
  for size in (int(n) for n in args.members.split(",")):
    keys = _stack([make_keys(seed) for seed in range(size)])
    state = init_population(exp, keys, _stack([exp.hparams] * size))
    with tempfile.TemporaryDirectory() as tmp:
      writers = [CsvWriter(os.path.join(tmp, f"m{i}.csv")) for i in range(size)]
      targets = [Target(i, os.path.join(tmp, f"m{i}"), writers[i]) for i in range(size)]
      for draw in (False, True) if args.figures else (False,):
        runner = PopulationDiagnostics(diagnostics, probe, keys.diag, draw=draw)
        ways = {
            "vmapped": functools.partial(runner.run, STEP, state, targets, force=True),
            "per member": functools.partial(_per_member, diagnostics, probe, keys.diag, state,
                                            targets, draw),
        }
        wall, cpu = {way: [] for way in ways}, {way: [] for way in ways}
        for fn in ways.values():
          fn()  # compiles
        for _ in range(args.repeats):
          for way, fn in ways.items():  # alternate, so drift hits both alike
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[way].append(time.perf_counter() - start)
            cpu[way].append(time.process_time() - start_cpu)
        vm, pm = (statistics.median(wall[w]) for w in ("vmapped", "per member"))
        vc, pc = (statistics.median(cpu[w]) for w in ("vmapped", "per member"))
        print(f"  {size:3d} members, figures {'drawn' if draw else 'off  '}: vmapped "
              f"{vm:7.3f} s ({vc:6.3f} s CPU), per member {pm:7.3f} s ({pc:6.3f} s CPU): "
              f"{pm / vm:5.1f}x wall, {pc / vc:5.1f}x CPU", flush=True)
      for w in writers:
        w.close()


if __name__ == "__main__":
  main(sys.argv[1:])
