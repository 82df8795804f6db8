"""Two `jax.distributed` processes on localhost train one run (gmf_jax/gmf_jax/distributed.py).

Each process has one CPU device; together they form a 2-device `data` mesh, read only their
own half of every streamed batch, write one run record (process 0) and one checkpoint (orbax,
both processes), stop together on a SIGTERM to either, and resume. Tolerance against one
process on one device: the gradient is summed over the processes in another order (1e-4
relative on the eval metrics, as in test_mesh.py).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from gmf_jax import failpoints
from tests.conftest import CONFIGS, run_cli

ENV = {"XLA_FLAGS": "", "WANDB_MODE": "offline"}
ARGS = ["--config=" + str(CONFIGS / "mlp.py") + ":smoke", "--config.steps_per_call=20",
        "--config.log_every_steps=10", "--config.eval_every_steps=20",
        "--config.checkpoint.every_steps=20", "--config.data.on_device=no",
        "--config.schedule.name=constant"]
RTOL = 1e-4


def _port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _two_processes(cwd, num_steps: int, envs=(None, None), extra=(), timeout=240):
  """Starts both processes of one job; returns their (returncode, stdout, stderr)."""
  port = _port()
  procs = []
  for i in range(2):
    cmd = [sys.executable, "-m", "gmf_jax.main", *ARGS, f"--config.num_steps={num_steps}",
           f"--config.distributed.coordinator_address=localhost:{port}",
           "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
           "--workdir=run", *extra]
    procs.append(subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **ENV, **(envs[i] or {})},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  out = []
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=timeout)
      out.append((p.returncode, stdout, stderr))
  finally:
    for p in procs:
      p.kill()
  return out


def _json(path):
  with open(path) as f:
    return json.load(f)


def _rows(folder):
  with open(os.path.join(folder, "metrics.csv")) as f:
    return list(csv.DictReader(f))


def _eval(folder, step):
  return {r["name"]: float(r["value"]) for r in _rows(folder)
          if r["step"] == str(step) and r["name"].startswith("eval/")}


def _close(a, b):
  return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= RTOL * abs(b[k]) for k in a)


def _one_record(run, sessions):
  meta = _json(run / "metadata.json")
  assert [s["status"] for s in meta["sessions"]] == ["completed"] * sessions
  rows = [(r["step"], r["name"]) for r in _rows(run)]
  assert len(rows) == len(set(rows))  # no row written twice
  wandb_runs = [d for d in os.listdir(run / "wandb") if d.startswith("offline-run-")]
  assert len(wandb_runs) == sessions  # one wandb run (one id), one folder per session
  assert len({d.rsplit("-", 1)[-1] for d in wandb_runs}) == 1
  summary = _json(run / "summary.json")
  assert summary["mesh"]["devices"] == 2 and summary["mesh"]["axes"]["data"] == 2


def test_two_processes_train_one_run_record_it_once_and_resume(tmp_path):
  (code0, out0, err0), (code1, _, err1) = _two_processes(tmp_path, 40)
  assert (code0, code1) == (0, 0), err0[-3000:] + err1[-3000:]
  run = tmp_path / "run"
  _one_record(run, sessions=1)
  assert "process 0 of 2" in out0 + err0
  assert sorted(os.listdir(run / "checkpoints")) == ["20", "40"]
  # Extended to 60 steps, with process 1's part of the latest checkpoint unreadable: both
  # processes fall back to step 20 together (one of them alone would leave the other waiting),
  # and process 0 sets step 40 aside. (A resume from the latest checkpoint on both processes:
  # the SIGTERM test below.)
  for f in (run / "checkpoints" / "40" / "state").glob("ocdbt.process_1/d/*"):
    f.write_bytes(b"garbage")
  (code0, out0, err0), (code1, _, err1) = _two_processes(tmp_path, 60)
  assert (code0, code1) == (0, 0), err0[-3000:] + err1[-3000:]
  assert "checkpoint at step 40 cannot be restored" in out0 + err0
  assert "resuming from the checkpoint at step 20 of 60" in out0 + err0
  assert any(d.startswith("40.unreadable-") for d in os.listdir(run / "checkpoints"))
  _one_record(run, sessions=2)
  # One process on one device, never stopped (the schedule is constant, so extending the run
  # changed nothing): the same numbers at every evaluation.
  alone = run_cli(*ARGS, "--config.num_steps=60", "--workdir=alone", cwd=tmp_path, env=ENV)
  assert alone.returncode == 0, alone.stderr[-3000:]
  for step in (20, 40, 60):
    assert _close(_eval(run, step), _eval(tmp_path / "alone", step)), step


def test_a_sigterm_to_one_process_stops_both_at_one_step(tmp_path):
  # Process 1 signals itself as its 3rd chunk starts: both stop at the same step, saved once.
  # The processes agree on a step a few seconds after the signal: no periodic checkpoints or
  # evaluations meanwhile, so the run gets there quickly. The data stays on the devices here
  # (replicated on both processes), the other test streams it.
  envs = (None, {failpoints.ENV: "train_call@3=SIGTERM"})
  quiet = ["--config.checkpoint.every_steps=0", "--config.eval_every_steps=100000",
           "--config.data.on_device=yes"]
  (code0, out0, err0), (code1, _, err1) = _two_processes(tmp_path, 100000, envs, quiet)
  assert (code0, code1) == (128 + signal.SIGTERM,) * 2, err0[-3000:] + err1[-3000:]
  run = tmp_path / "run"
  meta = _json(run / "metadata.json")
  assert meta["status"] == "preempted"
  step = int(meta["error"].split("at step ")[1].split(";")[0])
  assert 0 < step < 100000 and os.listdir(run / "checkpoints") == [str(step)]
  (code0, out0, err0), (code1, _, err1) = _two_processes(tmp_path, step + 20, extra=quiet)
  assert (code0, code1) == (0, 0), err0[-3000:] + err1[-3000:]
  assert f"resuming from the checkpoint at step {step} of {step + 20}" in out0 + err0
  assert _json(run / "metadata.json")["status"] == "completed"


def test_an_error_in_process_0_alone_stops_both_and_is_recorded(tmp_path):
  # Diagnostics and the record are process 0's work only: its error is held to the next chunk
  # boundary, where the other process hears of it, so neither waits forever.
  envs = ({failpoints.ENV: "diagnostics@2=raise"}, None)
  with_diagnostics = ["--config=" + str(CONFIGS / "mlp.py"), "--config.progress_bar=False"]
  (code0, _, err0), (code1, _, err1) = _two_processes(tmp_path, 80, envs, with_diagnostics,
                                                      timeout=120)
  assert code0 == 1 and code1 == 1, err0[-3000:] + err1[-3000:]
  assert "process 0 stopped the run: FailpointError" in err1
  meta = _json(tmp_path / "run" / "metadata.json")
  assert meta["status"] == "failed" and "FailpointError" in meta["error"]


@pytest.mark.parametrize("flags, says", [
    (["--config.distributed.num_processes=2"], "coordinator_address"),
    (["--config.distributed.process_id=3", "--config.distributed.num_processes=2",
      "--config.distributed.coordinator_address=localhost:1"], "process_id=3"),
    (["--config.distributed.enabled=maybe"], "distributed.enabled"),
    (["--config.num_seeds=2", "--config.distributed.num_processes=2",
      "--config.distributed.process_id=0",
      "--config.distributed.coordinator_address=localhost:1"], "runs in one process"),
])
def test_a_partly_described_job_is_refused_before_anything_runs(tmp_path, flags, says):
  done = run_cli(*ARGS, "--config.num_steps=5", *flags, "--workdir=run", cwd=tmp_path, env=ENV)
  assert done.returncode == 2 and says in done.stderr, done.stderr[-2000:]
  assert not (tmp_path / "run").exists()
