"""How fast bad input is reported: a typo in an override against `python -c "import jax"`.

A typo (`--config.optimizer.lerning_rate=1`) is caught while the config text is parsed, before
the training stack is imported, so it should fail in well under half the time JAX alone takes
to import. A range error (`--config.optimizer.b1=5`) is caught at build time, after the
imports; it is timed too, for comparison. Each command runs in a fresh process; the best of
`--repeats` is reported (start-up noise on a busy machine is one-sided).

  python benchmarks/fast_failure.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "vae.py")
COMMANDS = {
    "import jax (baseline)": [sys.executable, "-c", "import jax"],
    "typo in an override": [sys.executable, "-m", "gmf_jax.main", f"--config={CONFIG}",
                            "--config.optimizer.lerning_rate=1"],
    "value out of range": [sys.executable, "-m", "gmf_jax.main", f"--config={CONFIG}",
                           "--config.optimizer.b1=5"],
}


def best_time(cmd: list[str], repeats: int, expect_rc: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    times.append(time.perf_counter() - start)
    if proc.returncode != expect_rc:
      raise SystemExit(f"{cmd} exited {proc.returncode}:\n{proc.stderr[-1000:]}")
  return min(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args()
  times = {}
  for name, cmd in COMMANDS.items():
    times[name] = best_time(cmd, args.repeats, 0 if "baseline" in name else 2)
  base = times["import jax (baseline)"]
  for name, sec in times.items():
    print(f"{name:24s} {sec:6.3f} s   {sec / base:5.2f}x import jax")
  ratio = times["typo in an override"] / base
  print(f"typo / import jax = {ratio:.2f} (goal < 0.5): {'PASS' if ratio < 0.5 else 'FAIL'}")


if __name__ == "__main__":
  main()
