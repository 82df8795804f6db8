"""GPU check: one short script for a machine with an accelerator (issue #12), in under 5 minutes.

Runs, one after another, each in its own process with a time limit, and prints their lines:

  1. devices       `jax.devices()`, the platform and the device kind.
  2. single run    benchmarks/train_speed.py (the MLP and the VAE through gmf_jax against a
                   hand-written lax.scan loop and a naive loop), shortened.
  3. population    benchmarks/gpu_sweep.py: 64 seeds vmapped against 64 single runs in
                   sequence (the sequential arm stops after --sequential-budget seconds and is
                   scaled from the runs it finished).
  4. Jacobians     benchmarks/jacobian_modes.py: the diagnostic's forward/reverse mode choice.
  5. data parallel configs/mlp.py trained through gmf_jax on every visible device (a `data`
                   mesh axis, each batch split) against the same run on one device
                   (CUDA_VISIBLE_DEVICES / the first device only), steps/s from their
                   summaries; skipped with one device.
  6. precision     benchmarks/trainer_parts.py --pairs precision: a ResNet-8's train step in
                   bfloat16 against float32 (parameters float32 in both).

Each part's last lines are printed with its wall time; a part that fails or runs out of time
says so and the check goes on. Nothing is written outside a temporary folder. --quick shrinks
every part (a smoke run on a CPU; its numbers mean nothing).

    python benchmarks/gpu_check.py [--quick] [--budget SEC]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "benchmarks")


def _devices() -> tuple[int, str]:
  import jax

  devices = jax.devices()
  kind = getattr(devices[0], "device_kind", devices[0].platform)
  print(f"jax.devices(): {devices}")
  print(f"platform {devices[0].platform}, device kind {kind}, {len(devices)} device(s); "
        f"jax {jax.__version__}", flush=True)
  return len(devices), devices[0].platform


def _part(title: str, cmd: list[str], timeout: float, env: dict | None = None,
          tail: int = 12) -> str | None:
  shown = " ".join(os.path.relpath(c, REPO) if c.startswith(REPO) else c for c in cmd)
  print(f"\n== {title}: {shown}", flush=True)
  start = time.perf_counter()
  try:
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})}, text=True,
                          capture_output=True, timeout=timeout)
  except subprocess.TimeoutExpired as e:
    out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
    print("\n".join(out.strip().splitlines()[-tail:]))
    print(f"   {title}: ran out of its {timeout:.0f} s", flush=True)
    return None
  lines = done.stdout.strip().splitlines()
  print("\n".join(lines[-tail:]))
  wall = time.perf_counter() - start
  if done.returncode != 0:
    print("\n".join(done.stderr.strip().splitlines()[-6:]))
    print(f"   {title}: exit {done.returncode} after {wall:.0f} s", flush=True)
    return None
  print(f"   {title}: {wall:.0f} s", flush=True)
  return done.stdout


def _train(workdir: str, steps: int, env: dict, timeout: float) -> dict | None:
  # The smoke variant has no diagnostics; its lengths are overridden here.
  cmd = [sys.executable, "-m", "gmf_jax.main", f"--config={REPO}/configs/mlp.py:smoke",
         f"--config.num_steps={steps}", "--config.steps_per_call=500",
         "--config.log_every_steps=100", f"--config.eval_every_steps={steps}",
         "--config.wandb.mode=disabled", "--config.batch_size=512",
         "--config.checkpoint.every_steps=0", f"--workdir={workdir}"]
  try:
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, **env}, text=True,
                          capture_output=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return None
  if done.returncode != 0:
    print("\n".join(done.stderr.strip().splitlines()[-4:]))
    return None
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def data_parallel(count: int, platform: str, steps: int, timeout: float, tmp: str,
                  quick: bool) -> None:
  many_env = {}
  if count == 1 and platform == "cpu" and quick:  # a smoke run of the path: 4 host devices
    count, many_env = 4, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  print(f"\n== data parallel: configs/mlp.py, batch 512, {steps} steps, {count} device(s) "
        "against 1", flush=True)
  if count == 1:
    print("   skipped: one device")
    return
  one_env = ({"CUDA_VISIBLE_DEVICES": "0"} if platform == "gpu" else
             {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
  if platform not in ("gpu", "cpu"):
    one_env = {}  # a TPU: no portable way to hide devices; compare against mesh.data=N only
  many = _train(os.path.join(tmp, "many"), steps, many_env, timeout)
  one = _train(os.path.join(tmp, "one"), steps, one_env, timeout) if one_env else None
  if many is None:
    print("   data parallel: the multi-device run failed or ran out of time")
    return
  print(f"   {count} devices: {many['steps_per_sec']:.0f} steps/s, mesh {many['mesh']}")
  if one is not None:
    print(f"   1 device:  {one['steps_per_sec']:.0f} steps/s")
    print(f"   {count} devices / 1 device: {many['steps_per_sec'] / one['steps_per_sec']:.2f}x;"
          f" eval/loss {many['metrics']['eval/loss']['final']:.6g} vs "
          f"{one['metrics']['eval/loss']['final']:.6g}")


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="a smoke run of every part")
  parser.add_argument("--budget", type=float, default=280.0, help="seconds for all parts")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  count, platform = _devices()
  q = args.quick
  share = args.budget / 4  # each part's limit; parts that finish early leave time to later ones
  py = sys.executable
  with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
    env = {"GMF_JAX_COMPILE_CACHE_DIR": os.path.join(tmp, "cache"), "WANDB_MODE": "disabled"}
    _part("single run", [py, f"{BENCH}/train_speed.py", "--steps", "2000" if q else "10000",
                         "--vae-steps", "1000" if q else "3000", "--repeats", "1" if q else "2",
                         "--retries", "0"], share, env)
    _part("population", [py, f"{BENCH}/gpu_sweep.py", "--seeds", "4" if q else "64",
                         "--steps", "1000", "--sequential-budget", "10" if q else "60"],
          share, env)
    _part("Jacobians", [py, f"{BENCH}/jacobian_modes.py", "--repeats", "2" if q else "7",
                        "--inner", "1" if q else "3"], share / 2, env)
    left = max(30.0, args.budget - (time.perf_counter() - start))
    data_parallel(count, platform, 1000 if q else 3000, left / 3, tmp, q)
    _part("precision", [py, f"{BENCH}/trainer_parts.py", "--pairs", "precision",
                        "--calls", "3" if q else "8"], left / 3, env)
  print(f"\ngpu check: {time.perf_counter() - start:.0f} s in all")
  return 0


if __name__ == "__main__":
  sys.exit(main())
