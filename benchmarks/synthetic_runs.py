"""Synthetic gmf_jax run folders, written fast, for benchmarks of `gmf_jax.analysis`.

The folders have the format of real ones (compare a seed ensemble of configs/mlp.py, e.g.
`python -m gmf_jax.main --config=configs/mlp.py --config.num_seeds=16 --workdir=/tmp/ens`):

    <root>/sweep_<i>/sweep.json               definition, members (name, overrides, seed,
                                              population, status, folder), populations
    <root>/sweep_<i>/populations/p0/population.json
    <root>/sweep_<i>/<member>/                named as gmf_jax.sweep names members, e.g.
                                              `lr=0.01,weight_decay=0.0001,seed=3`
        config.json    configs/mlp.py's resolved config (every key, the same nesting) with the
                       member's optimizer.learning_rate, optimizer.weight_decay and seed
        config.py      the config file's text
        metadata.json  status, times, command, git, versions, host, process and heartbeat
        metrics.csv    `step,name,value,wall_time`: train/{accuracy,grad_norm,loss,
                       learning_rate} every logged step, eval/{accuracy,loss} every 10th
        summary.json   final/best of every metric (by gmf_jax.runlog.summary's rules, from the
                       rows written) and the run's facts
        population.json, plots/metrics.png, diagnostics/confusion_matrix/step_<N>.npz

Each sweep is 5 learning rates x 2 weight decays x 10 seeds = 100 members (one population).
What is not there: checkpoints (orbax folders nothing in analysis reads), wandb folders (the
configs say wandb.mode=disabled), real pixels in the PNGs.

Statuses, by member index in each sweep: FAILED_MEMBERS `failed` (a non-finite loss at 37% of
the run: that row's train/loss and train/grad_norm are nan; metadata's error says so);
CRASHED_MEMBERS recorded `running` under a pid no process of this host holds, with an old
heartbeat and the summary of its last evaluation (what `kill -9` leaves: effective status
`crashed`); with `alive=True` the last member of the first sweep is `running` under the
calling process's own identity (effective status `running` while it lives); the rest
`completed`.

Nothing here imports gmf_jax. JSON is filled into per-sweep templates (json.dumps with indent
runs the pure-Python encoder: per file, it would cost more than the write), and sweeps are
written by one process per CPU (up to 2), so 10,000 folders take tens of seconds on tmpfs.

    python benchmarks/synthetic_runs.py ROOT [--runs 1000] [--logs 100]
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import math
import multiprocessing
import os
import socket
import sys
import time
import zlib

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = os.path.join(REPO, "configs", "mlp.py")

LEARNING_RATES = (0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 0.0003)
LR_PER_SWEEP = 5  # sweep i takes LEARNING_RATES[i % 3 : i % 3 + 5]
WEIGHT_DECAYS = (0.0001, 0.0)
SEEDS_PER_POINT = 10
MEMBERS_PER_SWEEP = LR_PER_SWEEP * len(WEIGHT_DECAYS) * SEEDS_PER_POINT  # 100
FAILED_MEMBERS = (13, 57)  # 2% of each sweep
CRASHED_MEMBERS = (7,)  # 1%
LOG_EVERY = 100
EVAL_EVERY_LOGS = 10  # eval rows at every 10th logged step
TRAIN_NAMES = ("train/accuracy", "train/grad_norm", "train/loss", "train/learning_rate")
EVAL_NAMES = ("eval/accuracy", "eval/loss")
START_UNIX = 1796165625.0  # 2026-12-01
HEADER = "step,name,value,wall_time\n"

# configs/mlp.py resolved, as its runs write config.json; "@KEY@" strings are filled per
# member. Kept here (not built through gmf_jax) so the generator needs no JAX.
BASE_CONFIG = {
    "batch_size": 64,
    "checkpoint": {"async_save": True, "best_metric": "eval/loss", "best_mode": "auto",
                   "every_steps": 5000, "max_to_keep": 3},
    "compile_cache": {"dir": "auto", "max_size_mb": 2048},
    "data": {"binarize": False, "max_device_bytes": 1073741824, "name": "digits",
             "on_device": "auto"},
    "data_seed": None,
    "diagnostics": {"confusion_matrix": {"schedule": "end"},
                    "weight_stats": {"every_steps": 1000}},
    "eval_batch_size": 500,
    "eval_every_steps": LOG_EVERY * EVAL_EVERY_LOGS,
    "log_every_steps": LOG_EVERY,
    "loss": {"label_smoothing": 0.0, "name": "cross_entropy"},
    "max_consecutive_nonfinite": 10,
    "model": {"activation": "relu", "dropout_rate": 0.0, "hidden": [64],
              "name": "mlp_classifier"},
    "name": "mlp",
    "num_epochs": None,
    "num_seeds": 1,
    "num_steps": "@NUM_STEPS@",
    "on_nonfinite": "stop",
    "optimizer": {"b1": 0.9, "b2": 0.999, "decay": 0.9, "eps": 1e-08, "grad_clip_norm": None,
                  "learning_rate": "@LR@", "momentum": 0.9, "name": "sgd", "nesterov": True,
                  "weight_decay": "@WD@"},
    "probe_size": 256,
    "progress_bar": False,
    "schedule": {"boundaries": [], "decay_rate": 0.1, "decay_steps": None, "end_value": 0.0,
                 "name": "cosine", "transition_steps": None, "warmup_steps": 0},
    "seed": "@SEED@",
    "steps_per_call": 500,
    "wandb": {"entity": None, "group": "@SWEEP@", "init_timeout": 30.0, "mode": "disabled",
              "name": None, "notes": None, "project": "gmf_jax", "tags": []},
}

VERSIONS = {"flax": "0.12.8", "gmf_jax": "0.1.0", "jax": "0.10.2", "jaxlib": "0.10.2",
            "ml-collections": "1.1.0", "numpy": "2.4.6", "optax": "0.2.8",
            "orbax-checkpoint": "0.12.8", "python": "3.11.7", "tensorflow-datasets": "4.9.10",
            "wandb": "0.31.0"}

# A 1x1 grey PNG: the plot file is there; nothing reads its pixels.
_PNG = bytes.fromhex("89504e470d0a1a0a0000000d494844520000000100000001080000000"
                     "03a7e9b550000000a49444154789c63b80100008400828c1b8e7f000000"
                     "0049454e44ae426082")


@dataclasses.dataclass
class Tree:
  """What `write_tree` wrote: the counts a benchmark checks the loaders against."""

  root: str
  runs: int
  metric_rows: int  # data rows over every metrics.csv
  eval_rows: int  # eval/accuracy rows over every metrics.csv
  statuses: dict[str, int]  # effective status -> runs
  seconds: float


@dataclasses.dataclass(frozen=True)
class _Job:
  """One sweep to write (picklable, for the worker processes)."""

  root: str
  index: int
  num_logs: int
  dead_pids: tuple[int, ...]  # one per crashed member
  alive: tuple[int, int | None] | None  # (pid, start ticks) of the live member's process
  host: tuple[tuple[str, str | None], ...]  # boot_id, hostname, pid_namespace


def _host_identity() -> dict[str, str | None]:
  """This host's fields of a run's `process` record (see gmf_jax.runlog.liveness)."""
  try:
    with open("/proc/sys/kernel/random/boot_id") as f:
      boot = f.read().strip()
  except OSError:
    boot = None
  try:
    namespace = os.readlink("/proc/self/ns/pid")
  except OSError:
    namespace = None
  return {"boot_id": boot, "hostname": socket.gethostname(), "pid_namespace": namespace}


def _start_ticks(pid: int) -> int | None:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rsplit(")", 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _dead_pids(count: int) -> list[int]:
  """`count` pids that no process of this host holds now, from the top of the pid range."""
  try:
    with open("/proc/sys/kernel/pid_max") as f:
      pid = int(f.read()) - 1
  except (OSError, ValueError):
    pid = 32767
  pids = []
  while len(pids) < count and pid > 300:
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      pids.append(pid)
    except PermissionError:  # another user's process
      pass
    pid -= 1
  return pids


def _npz_bytes() -> bytes:
  """A confusion matrix as the confusion_matrix diagnostic saves it (an uncompressed npz)."""
  buffer = io.BytesIO()
  np.savez(buffer, matrix=np.eye(10, dtype=np.int32) * 36)
  return buffer.getvalue()


def _iso(unix: float) -> str:
  return datetime.datetime.fromtimestamp(unix, datetime.UTC).isoformat(timespec="seconds")


def _dumps(data) -> str:
  """As gmf_jax.runlog.files.write_json writes JSON."""
  return json.dumps(data, indent=2, sort_keys=True)


def _fill(template: str, values: dict[str, str]) -> str:
  """Replaces each `"@KEY@"` string of a JSON template with the JSON text `values[KEY]`."""
  for key, text in values.items():
    template = template.replace(f'"@{key}@"', text)
  return template


def _json_float(value: float) -> str:
  if math.isfinite(value):
    return repr(value)
  return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _higher_is_better(name: str) -> bool:
  return name.rsplit("/", 1)[-1] == "accuracy"


def _curves(rng: np.random.Generator, lr: float, wd: float, steps: np.ndarray,
            num_steps: int) -> dict[str, list[float]]:
  """Plausible curves of one member: best near lr 0.03, slower and worse away from it, noisy
  by seed. Train means are float64 (window means), eval values and the learning rate float32,
  as real runs log them."""
  t = steps / num_steps
  quality = math.exp(-0.5 * (math.log10(lr / 0.03) / 0.6) ** 2)  # 1 at lr 0.03
  speed = 3.0 + 25.0 * quality
  floor = 0.005 + 0.3 * (1 - quality) + (0.0 if wd else 0.01)
  noise = rng.normal(0.0, 1.0, (5, len(steps)))
  decay = np.exp(-speed * t)
  loss = floor + 2.3 * decay * (1 + 0.05 * noise[0]) + 0.003 * np.abs(noise[1])
  accuracy = np.clip(1.0 - 0.9 * decay - 0.4 * floor + 0.003 * noise[2], 0, 1)
  grad_norm = np.abs(0.05 + 0.5 * np.exp(-speed * t / 2) * (1 + 0.1 * noise[3]))
  learning_rate = lr * 0.5 * (1 + np.cos(np.pi * t))
  evals = slice(EVAL_EVERY_LOGS - 1, None, EVAL_EVERY_LOGS)
  eval_loss = (loss * (1.4 + 0.05 * noise[4]) + 0.08)[evals]
  eval_accuracy = np.clip(accuracy - 0.03 - 0.02 * (1 - quality) + 0.005 * noise[4], 0, 1)
  eval_accuracy = (np.round(eval_accuracy * 360) / 360)[evals]  # of the 360 test examples
  f32 = lambda x: x.astype(np.float32).astype(np.float64).tolist()
  return {
      "train/accuracy": (np.round(accuracy * 6400) / 6400).tolist(),  # 100 steps x batch 64
      "train/grad_norm": grad_norm.tolist(), "train/loss": loss.tolist(),
      "train/learning_rate": f32(learning_rate),
      "eval/accuracy": f32(eval_accuracy), "eval/loss": f32(eval_loss),
  }


def _member_rows(curves: dict[str, list[float]], logs: int, nan_last: bool, wall0: float
                 ) -> tuple[str, dict[str, tuple[list[int], list[float]]]]:
  """metrics.csv's data rows of the first `logs` logged steps, and each metric's series.

  With `nan_last`, the last logged step is the non-finite one: its loss and grad_norm are nan
  and the run stopped before evaluating.
  """
  steps = [(i + 1) * LOG_EVERY for i in range(logs)]
  # 4.1 ms a step, and 0.8 s of host work after each 500-step call
  walls = [wall0 + step * 0.00411237 + (i // 5) * 0.8 for i, step in enumerate(steps)]
  series = {name: (steps, curves[name][:logs]) for name in TRAIN_NAMES}
  if nan_last:
    for name in ("train/grad_norm", "train/loss"):
      series[name] = (steps, [*curves[name][:logs - 1], math.nan])
  evaluated = [i for i in range(EVAL_EVERY_LOGS - 1, logs, EVAL_EVERY_LOGS)
               if not (nan_last and i == logs - 1)]
  for name in EVAL_NAMES:
    series[name] = ([steps[i] for i in evaluated], curves[name][:len(evaluated)])
  stamps = [f"{wall:.6f}" for wall in walls]
  per_name = [[f"{step},{name},{value!r},{stamp}"
               for step, value, stamp in zip(steps, series[name][1], stamps, strict=True)]
              for name in TRAIN_NAMES]
  lines = ["\n".join(rows) for rows in zip(*per_name, strict=True)]  # one string per step
  for j, i in enumerate(evaluated):
    stamp = f"{walls[i] + 0.73:.6f}"  # the evaluation comes after the call's rows
    lines[i] += "".join(f"\n{steps[i]},{name},{series[name][1][j]!r},{stamp}"
                        for name in EVAL_NAMES)
  lines.append("")
  return "\n".join(lines), series


def _summary_metrics(series: dict[str, tuple[list[int], list[float]]], upto: int
                     ) -> dict[str, dict]:
  """summary.json's `metrics` after the rows up to step `upto`: the final value and the first
  best finite one, the rules of gmf_jax.runlog.summary.Summary."""
  out = {}
  for name, (steps, values) in series.items():
    n = int(np.searchsorted(steps, upto, side="right"))
    if n == 0:
      continue
    entry = {"final": values[n - 1], "final_step": steps[n - 1]}
    head = np.asarray(values[:n])
    finite = np.isfinite(head)
    if finite.any():
      higher = _higher_is_better(name)
      masked = np.where(finite, head, -np.inf if higher else np.inf)
      i = int(np.argmax(masked) if higher else np.argmin(masked))
      entry["best"], entry["best_step"] = values[i], steps[i]
    out[name] = entry
  return out


def _render_metrics(metrics: dict[str, dict]) -> str:
  """`_dumps`'s text of summary.json's `metrics` value at the top level (indent 2)."""
  if not metrics:
    return "{}"
  blocks = []
  for name in sorted(metrics):
    entry = metrics[name]
    fields = [f'      "{key}": ' + (str(entry[key]) if key.endswith("_step")
                                      else _json_float(entry[key]))
              for key in sorted(entry)]
    blocks.append(f'    "{name}": {{\n' + ",\n".join(fields) + "\n    }")
  return "{\n" + ",\n".join(blocks) + "\n  }"


def _write_sweep(job: _Job) -> tuple[int, int, dict[str, int]]:
  """Writes one sweep's folder; returns (metrics rows, eval/accuracy rows, statuses)."""
  s, num_logs = job.index, job.num_logs
  host = dict(job.host)
  num_steps = num_logs * LOG_EVERY
  sweep_name = f"sweep_{s:03d}"
  sweep_dir = os.path.join(job.root, sweep_name)
  lrs = LEARNING_RATES[s % 3:s % 3 + LR_PER_SWEEP]
  points = [(lr, wd, seed) for lr in lrs for wd in WEIGHT_DECAYS
            for seed in range(SEEDS_PER_POINT)]
  # As gmf_jax.sweep.spec.member_names: short keys, floats as {:g}, the seed last.
  names = [f"lr={lr:g},weight_decay={wd:g},seed={seed}" for lr, wd, seed in points]
  command = [sys.executable, "-m", "gmf_jax.sweep", "--sweep=sweeps/mlp_lr_wd.py",
             f"--workdir=runs/{sweep_name}"]
  start = START_UNIX + s * 3600.0
  wall0 = start + 8.0  # the first rows come after the compile
  dead = iter(job.dead_pids)
  npz = _npz_bytes()
  with open(CONFIG_FILE) as f:
    config_text = f.read()
  steps = np.arange(1, num_logs + 1) * LOG_EVERY

  config_template = _fill(_dumps(BASE_CONFIG), {"NUM_STEPS": str(num_steps),
                                                "SWEEP": json.dumps(sweep_name)})
  population_template = _dumps({"checkpoints": "../populations/p0", "index": "@INDEX@",
                                "members": names, "size": len(names)})
  summary_template = _dumps({
      "compile_cache": {"dir": "/root/.cache/gmf_jax/jax/x86_64-858088f5aea4", "hits": 23,
                        "misses": 0, "saved_sec": 10.139},
      "data_on_device": True, "dataset": "digits",
      "diagnostics_sec": {"build": 0.00145, "confusion_matrix": 5.33, "warm_up_wait": 3.6e-05,
                          "weight_stats": 3.59},
      "first_chunk_sec": 2.06, "loop_sec": 20.9, "member_steps_per_sec": 5456.5,
      "metrics": "@METRICS@", "num_params": 4810, "num_steps": num_steps, "num_test": 360,
      "num_train": 1437, "platform": "cpu",
      "population": {"index": "@INDEX@", "members": names, "size": len(names)},
      "record_calls": {"checkpoints": 7, "metrics": 240, "plots": 16, "run_folder": 1},
      "record_sec": {"checkpoints": 0.29, "metrics": 1.57, "plots": 6.08, "run_folder": 0.18},
      "run_sec": 31.0, "seed": "@SEED@", "status": "@STATUS@",  # no wandb fields: disabled
  })
  metadata_template = _dumps({
      "command": command, "config_file": CONFIG_FILE, "config_variant": None,
      "devices": {"backend": "cpu", "device_count": 1, "device_kinds": ["cpu"],
                  "local_device_count": 1, "platform": "cpu", "process_count": 1,
                  "process_index": 0},
      "end_time": "@END@", "error": "@ERROR@",
      "git": {"branch": "main", "commit": "5739728ed98010fc407841b4d2873af8b24a3c06",
              "dirty": False, "error": None, "root": REPO},
      "heartbeat": {"every_sec": 5.0, "step": "@STEP@", "time": "@BEAT_TIME@",
                    "unix": "@BEAT_UNIX@"},
      "host": {"cpu_count": 2, "hostname": host["hostname"], "pid": "@PID@",
               "platform": "Linux-6.18.44-fc-v1045-x86_64-with-glibc2.36", "user": "root"},
      "process": {**host, "pid": "@PID@", "start_ticks": "@TICKS@"},
      "seed": "@SEED@",
      "sessions": [{"command": command, "end_time": "@END@", "error": "@ERROR@",
                    "hostname": host["hostname"], "pid": "@PID@", "start_time": _iso(start),
                    "status": "@STATUS@"}],
      "start_time": _iso(start), "status": "@STATUS@", "versions": VERSIONS,
      "wandb_run_id": None,
  })

  os.makedirs(os.path.join(sweep_dir, "populations", "p0"))
  with open(os.path.join(sweep_dir, "populations", "p0", "population.json"), "w") as f:
    f.write(_dumps({"members": names}))
  members, statuses = [], {}
  metric_rows = eval_rows = 0
  for index, ((lr, wd, seed), name) in enumerate(zip(points, names, strict=True)):
    if job.alive is not None and index == MEMBERS_PER_SWEEP - 1:
      kind, logs = "running", max(num_logs // 2, 1)
    elif index in FAILED_MEMBERS:
      kind, logs = "failed", max(int(num_logs * 0.37), 1)
    elif index in CRASHED_MEMBERS:
      kind, logs = "crashed", max(int(num_logs * 0.64), 1)
    else:
      kind, logs = "completed", num_logs
    statuses[kind] = statuses.get(kind, 0) + 1
    rng = np.random.default_rng(zlib.crc32(f"{s}/{index}".encode()))
    rows, series = _member_rows(_curves(rng, lr, wd, steps, num_steps), logs, kind == "failed",
                                wall0)
    last_step = logs * LOG_EVERY
    metric_rows += rows.count("\n")
    eval_rows += len(series["eval/accuracy"][0])
    end = wall0 + last_step * 0.00411237 + 12.0

    member_dir = os.path.join(sweep_dir, name)
    os.makedirs(os.path.join(member_dir, "plots"))
    os.makedirs(os.path.join(member_dir, "diagnostics", "confusion_matrix"))
    with open(os.path.join(member_dir, "metrics.csv"), "w") as f:
      f.write(HEADER + rows)
    with open(os.path.join(member_dir, "config.json"), "w") as f:
      f.write(_fill(config_template, {"LR": repr(lr), "WD": repr(wd), "SEED": str(seed)}))
    with open(os.path.join(member_dir, "config.py"), "w") as f:
      f.write(config_text)
    with open(os.path.join(member_dir, "population.json"), "w") as f:
      f.write(population_template.replace('"@INDEX@"', str(index)))

    if kind in ("completed", "failed"):
      summary = _fill(summary_template, {
          "METRICS": _render_metrics(_summary_metrics(series, last_step)),
          "INDEX": str(index), "SEED": str(seed), "STATUS": json.dumps(kind)})
    else:  # a live or killed run: summary.json as its last evaluation saved it
      evaluated = series["eval/accuracy"][0]
      metrics = _summary_metrics(series, evaluated[-1] if evaluated else 0)
      summary = "{\n" + f'  "metrics": {_render_metrics(metrics)}' + "\n}"
    if index < 2 or kind != "completed":  # the templates must give what write_json writes
      assert summary == _dumps(json.loads(summary)), (sweep_name, name)
    with open(os.path.join(member_dir, "summary.json"), "w") as f:
      f.write(summary)

    recorded = "running" if kind in ("crashed", "running") else kind
    error = None
    if kind == "failed":
      error = (f"NonFiniteError: non-finite loss and grad_norm at step {last_step} (loss=nan, "
               "grad_norm=nan); the last checkpoint holds finite values. Lower "
               "optimizer.learning_rate or set optimizer.grad_clip_norm.")
    if kind == "running":
      (pid, ticks), beat = job.alive, time.time()
    elif kind == "crashed":
      pid, ticks, beat = next(dead), 27635 + s, end - 10.0
    else:
      pid, ticks, beat = 2676 + s, 27635 + s, end - 4.0
    metadata = _fill(metadata_template, {
        "END": "null" if recorded == "running" else json.dumps(_iso(end)),
        "ERROR": json.dumps(error), "STEP": str(last_step),
        "BEAT_TIME": json.dumps(_iso(beat)), "BEAT_UNIX": repr(beat), "PID": str(pid),
        "TICKS": json.dumps(ticks), "SEED": str(seed), "STATUS": json.dumps(recorded)})
    if index < 2 or kind != "completed":
      assert metadata == _dumps(json.loads(metadata)), (sweep_name, name)
    with open(os.path.join(member_dir, "metadata.json"), "w") as f:
      f.write(metadata)
    with open(os.path.join(member_dir, "plots", "metrics.png"), "wb") as f:
      f.write(_PNG)
    if kind in ("completed", "failed"):
      with open(os.path.join(member_dir, "diagnostics", "confusion_matrix",
                             f"step_{last_step}.npz"), "wb") as f:
        f.write(npz)
    members.append({"folder": name, "name": name,
                    "overrides": {"optimizer.learning_rate": lr, "optimizer.weight_decay": wd,
                                  "seed": seed},
                    "population": "p0", "seed": seed, "status": kind})

  definition = {
      "config": "configs/mlp.py", "config_resolved": CONFIG_FILE, "count": None,
      "description": None, "method": "grid", "name": sweep_name, "overrides": {},
      "parameters": {"optimizer.learning_rate": {"values": list(lrs)},
                     "optimizer.weight_decay": {"values": list(WEIGHT_DECAYS)}},
      "seed": None, "seeds": SEEDS_PER_POINT, "zip": [],
  }
  with open(os.path.join(sweep_dir, "sweep.json"), "w") as f:
    f.write(_dumps({"definition": definition, "executor": "vmap",
                    "file": os.path.join(REPO, "sweeps", "mlp_lr_wd.py"), "members": members,
                    "name": sweep_name, "populations": {"p0": names}}))
  return metric_rows, eval_rows, statuses


def write_tree(root: str, num_runs: int, num_logs: int = 100, *, alive: bool = False,
               workers: int | None = None) -> Tree:
  """Writes `num_runs` run folders, in sweeps of MEMBERS_PER_SWEEP, under `root`.

  Args:
    root: the folder to fill (created if missing; must hold no sweep_<i> folders yet).
    num_runs: runs in all, a multiple of MEMBERS_PER_SWEEP.
    num_logs: logged steps of a completed run (eval rows at every EVAL_EVERY_LOGS-th).
    alive: the last member of the first sweep is `running` under this process.
    workers: processes writing sweeps (default: the CPUs, at most 2).

  Returns:
    What was written: runs, metrics rows, eval/accuracy rows, effective statuses, seconds.
  """
  begin = time.perf_counter()
  if num_runs <= 0 or num_runs % MEMBERS_PER_SWEEP:
    raise ValueError(f"num_runs must be a positive multiple of {MEMBERS_PER_SWEEP}")
  num_sweeps = num_runs // MEMBERS_PER_SWEEP
  os.makedirs(root, exist_ok=True)
  host = tuple(sorted(_host_identity().items()))
  dead = _dead_pids(num_sweeps * len(CRASHED_MEMBERS))
  if len(dead) < num_sweeps * len(CRASHED_MEMBERS):
    raise RuntimeError("could not find enough unused pids for the crashed runs")
  per = len(CRASHED_MEMBERS)
  me = (os.getpid(), _start_ticks(os.getpid()))
  jobs = [_Job(root, s, num_logs, tuple(dead[s * per:(s + 1) * per]),
               me if alive and s == 0 else None, host) for s in range(num_sweeps)]
  workers = workers or min(2, os.cpu_count() or 1)
  if workers > 1 and num_sweeps > 1:
    with multiprocessing.get_context("fork").Pool(workers) as pool:
      results = pool.map(_write_sweep, jobs, chunksize=1)
  else:
    results = [_write_sweep(job) for job in jobs]
  statuses: dict[str, int] = {}
  for _, _, counts in results:
    for kind, n in counts.items():
      statuses[kind] = statuses.get(kind, 0) + n
  return Tree(root=os.path.abspath(root), runs=num_runs,
              metric_rows=sum(r[0] for r in results), eval_rows=sum(r[1] for r in results),
              statuses=statuses, seconds=time.perf_counter() - begin)


if __name__ == "__main__":
  import argparse

  parser = argparse.ArgumentParser(description="Writes synthetic gmf_jax run folders.")
  parser.add_argument("root")
  parser.add_argument("--runs", type=int, default=1000, help="a multiple of 100")
  parser.add_argument("--logs", type=int, default=100, help="logged steps per completed run")
  args = parser.parse_args()
  tree = write_tree(args.root, args.runs, args.logs)
  print(f"{tree.runs} runs, {tree.metric_rows} metrics rows, {tree.statuses}, in "
        f"{tree.seconds:.1f} s under {tree.root}")
