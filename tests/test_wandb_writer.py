"""wandb never stops training: a failure to start, log or finish is one warning, and no more.

The end-to-end tests break wandb for real (its run folder is a file; its service process is
killed mid-run) and run the CLI in its own process, then check that the run folder holds the
whole run. `BackgroundWandb`'s own test stands a recording writer in for the wandb run.
"""

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from gmf_jax.runlog.wandb_reader import find_offline_runs, read_offline_run
from gmf_jax.runlog.wandb_writer import BackgroundWandb
from tests.conftest import CONFIGS, run_cli

VAE = str(CONFIGS / "vae.py")
OFFLINE = {"WANDB_MODE": "offline"}
# Long enough (a few seconds of training) to kill wandb's service while the run trains.
LONG = {"num_steps": 2000, "steps_per_call": 10, "log_every_steps": 10, "eval_every_steps": 500}
SMOKE = {"num_steps": 40, "log_every_steps": 10, "eval_every_steps": 20}  # the :smoke values


def _flags(values):
  return [f"--config.{k}={v}" for k, v in values.items()]


def _json(path):
  with open(path) as f:
    return json.load(f)


def _steps(every, num_steps):
  """The steps the loop writes a metric at: every `every` steps, and the last one."""
  return set(range(every, num_steps + 1, every)) | {num_steps}


def _wandb_warnings(output):
  return [line for line in output.splitlines() if line.startswith("warning: wandb")]


def _assert_whole_run_recorded(run_dir, output, values):
  """Completed, every train/ and eval/ row in metrics.csv, one wandb warning, no traceback."""
  assert _json(run_dir / "metadata.json")["status"] == "completed"
  steps: dict[str, set[int]] = {}
  with open(run_dir / "metrics.csv", newline="") as f:
    for row in csv.DictReader(f):
      steps.setdefault(row["name"], set()).add(int(row["step"]))
  assert {"train/loss", "train/learning_rate", "eval/nelbo"} <= set(steps)
  for name, at in steps.items():
    if name.startswith("train/"):
      assert at == _steps(values["log_every_steps"], values["num_steps"]), name
    elif name.startswith("eval/"):
      assert at == _steps(values["eval_every_steps"], values["num_steps"]), name
  assert len(_wandb_warnings(output)) == 1, output
  assert "the run folder has every metric" in _wandb_warnings(output)[0]
  assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def wandb_blocked(tmp_path_factory):
  """A run folder whose `wandb` is a file, where wandb keeps its run. A folder holding files
  but no run is refused, so a first session makes the run's folder and fails before wandb
  starts; each rerun under test resumes a copy of it from step 0."""
  cwd = tmp_path_factory.mktemp("blocked")
  proc = run_cli(f"--config={VAE}:smoke", "--workdir=run", cwd=cwd,
                 env={**OFFLINE, "GMF_JAX_FAILPOINTS": "init=raise"})
  assert proc.returncode != 0 and "failpoint 'init'" in proc.stderr, proc.stderr
  run_dir = cwd / "run"
  assert not (run_dir / "wandb").exists()
  (run_dir / "wandb").write_text("not a folder\n")
  return run_dir


def _run_folder_with_wandb_blocked(tmp_path, wandb_blocked):
  """The test's own copy of `wandb_blocked`, as `tmp_path/run`."""
  shutil.copytree(wandb_blocked, tmp_path / "run")
  return tmp_path / "run"


def test_wandb_that_cannot_start_is_one_warning(tmp_path, wandb_blocked):
  run_dir = _run_folder_with_wandb_blocked(tmp_path, wandb_blocked)
  proc = run_cli(f"--config={VAE}:smoke", "--workdir=run", cwd=tmp_path, env=OFFLINE)
  output = proc.stdout + proc.stderr
  assert proc.returncode == 0, output
  _assert_whole_run_recorded(run_dir, output, SMOKE)
  assert "wandb failed to start" in output
  assert (run_dir / "wandb").read_text() == "not a folder\n"  # wandb found no other place
  assert _json(run_dir / "metadata.json")["wandb_run_id"] is None


def test_wandb_that_cannot_start_online_nor_offline_warns_for_each(tmp_path, wandb_blocked):
  run_dir = _run_folder_with_wandb_blocked(tmp_path, wandb_blocked)
  env = {"WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9",
         "WANDB_API_KEY": "0" * 40}
  proc = run_cli(f"--config={VAE}:smoke", "--config.wandb.init_timeout=3", "--workdir=run",
                 cwd=tmp_path, env=env)
  output = proc.stdout + proc.stderr
  assert proc.returncode == 0, output
  fallback, failure = _wandb_warnings(output)
  assert "logging offline" in fallback and "wandb failed to start" in failure
  assert "Traceback" not in output, output
  assert _json(run_dir / "metadata.json")["status"] == "completed"


def _descendants(pid):
  """(pid, command name) of each process below `pid` (children, theirs, ...), read from /proc."""
  parents = {}
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        stat = f.read()
    except OSError:  # it ended meanwhile
      continue
    name, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
    parents[int(entry)] = (int(rest[1]), name)  # the field after the state is the parent's pid
  found, below = [], {pid}
  while True:
    new = [(p, name) for p, (parent, name) in parents.items()
           if parent in below and p not in below]
    if not new:
      return found
    found += new
    below |= {p for p, _ in new}


def _wait_for_wandb_run(run_dir, proc, timeout=120):
  """Waits until the run has recorded its wandb run id: wandb is open and being written to."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    assert proc.poll() is None, proc.communicate()
    try:
      if _json(run_dir / "metadata.json").get("wandb_run_id"):
        return
    except (OSError, ValueError):  # not written yet
      pass
    time.sleep(0.02)
  raise TimeoutError(run_dir)


def _last_step(run_dir):
  with open(run_dir / "metrics.csv", newline="") as f:
    return max((int(row["step"]) for row in csv.DictReader(f)), default=0)


def test_wandb_service_killed_mid_run_is_one_warning(tmp_path):
  proc = subprocess.Popen(
      [sys.executable, "-m", "gmf_jax.main", f"--config={VAE}:smoke", *_flags(LONG),
       "--workdir=run"],
      cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env={**os.environ, **OFFLINE},
  )
  run_dir = tmp_path / "run"
  try:
    _wait_for_wandb_run(run_dir, proc)
    # wandb runs in a process of its own (gmf_jax.runlog.wandb_process): its service is below it
    (service,) = [pid for pid, name in _descendants(proc.pid) if name == "wandb-core"]
    os.kill(service, signal.SIGKILL)
    killed_at = _last_step(run_dir)
    stdout, stderr = proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.communicate()
  output = stdout + stderr
  assert proc.returncode == 0, output
  assert killed_at < LONG["num_steps"]  # the kill came while the run trained
  _assert_whole_run_recorded(run_dir, output, LONG)
  assert "wandb failed to log" in output


def test_a_killed_training_process_leaves_its_wandb_run_finished(tmp_path):
  """wandb runs in a process of its own, which outlives a training process killed with
  SIGKILL just long enough to finish that process's runs (exit code 1), then ends."""
  script = f"""
import os, signal
from gmf_jax.runlog.wandb_writer import WandbWriter
config = dict(mode="offline", project="p", entity=None, group=None, tags=[], name=None,
              notes=None, init_timeout=30)
writer = WandbWriter.open(config, {str(tmp_path)!r}, {{"seed": 3}}, None, requirements=False)
writer.write(5, {{"train/loss": 0.5}})
print(writer.run_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        timeout=120, env={**os.environ, **OFFLINE})
  assert proc.returncode == -signal.SIGKILL, proc.stderr
  run_id = proc.stdout.strip()
  deadline, run = time.time() + 60, None
  while time.time() < deadline and (run is None or run.exit_code is None):
    time.sleep(0.2)
    paths = find_offline_runs(str(tmp_path / "wandb"))
    run = read_offline_run(paths[0]) if paths else None
  assert run is not None and run.run_id == run_id and run.config["seed"] == 3
  assert run.exit_code == 1  # finished, as a run that did not complete
  assert [(row["_step"], row["train/loss"]) for row in run.history] == [(5, 0.5)]


class _RecordingWriter:
  """Stands in for the wandb run inside BackgroundWandb's own test: records what reaches it."""

  def __init__(self, fail_on_step=None):
    self.calls, self.closed, self.fail_on_step = [], None, fail_on_step

  def write(self, step, scalars):
    if step == self.fail_on_step:
      raise RuntimeError("wandb broke")
    self.calls.append((step, scalars))

  def write_images(self, step, paths):
    self.calls.append((step, paths))

  def close(self, exit_code=0):
    self.closed = exit_code


@pytest.fixture
def gmf_log(caplog):
  """The gmf_jax logger's records, each once (it may or may not propagate to caplog's root)."""
  logger = logging.getLogger("gmf_jax")
  propagate, logger.propagate = logger.propagate, False
  logger.addHandler(caplog.handler)
  try:
    yield caplog
  finally:
    logger.removeHandler(caplog.handler)
    logger.propagate = propagate


def _wandb_records(caplog):
  return [r.getMessage() for r in caplog.records if r.getMessage().startswith("warning: wandb")]


def _gated(writer):
  """An open_fn that waits for the returned gate, so that writes queue up before the run opens."""
  gate = threading.Event()

  def open_fn():
    gate.wait(5)
    return writer

  return open_fn, gate


def test_background_wandb_queues_writes_in_order(gmf_log):
  writer = _RecordingWriter()
  open_fn, gate = _gated(writer)
  ready_threads = []
  bg = BackgroundWandb(open_fn, lambda w: ready_threads.append((w, threading.current_thread())))
  scalars = {"train/loss": 1.0}
  bg.write(1, scalars)
  scalars["train/loss"] = 2.0  # the queued copy is unaffected
  bg.write_images(2, {"plots/loss": "loss.png"})
  assert writer.calls == [] and ready_threads == []
  gate.set()
  bg.close(3)
  assert writer.calls == [(1, {"train/loss": 1.0}), (2, {"plots/loss": "loss.png"})]
  assert writer.closed == 3 and ready_threads == [(writer, threading.main_thread())]
  assert bg.error is None and _wandb_records(gmf_log) == []
  assert bg.thread_cpu_sec > 0


def test_rows_of_one_step_go_to_wandb_as_one_log_call(gmf_log):
  writer = _RecordingWriter()
  bg = BackgroundWandb(lambda: writer, lambda w: None)
  bg.write(100, {"train/loss": 1.0})
  bg.write(200, {"train/loss": 0.5})
  bg.write(200, {"eval/loss": 0.7})  # the evaluation at the chunk's end
  bg.write(200, {"diag/weight_stats/norm": 3.0})
  bg.write_images(200, {"plots/loss": "loss.png"})
  bg.write(300, {"train/loss": 0.4})
  bg.close(0)
  assert writer.calls == [(100, {"train/loss": 1.0}),
                          (200, {"train/loss": 0.5, "eval/loss": 0.7,
                                 "diag/weight_stats/norm": 3.0}),
                          (200, {"plots/loss": "loss.png"}), (300, {"train/loss": 0.4})]


def test_a_batch_of_rows_goes_to_the_wandb_process_as_one_message(gmf_log):
  class BatchingWriter(_RecordingWriter):
    def write_rows(self, rows):
      self.calls.append(("message", [(step, sorted(scalars)) for step, scalars in rows]))

  writer = BatchingWriter()
  bg = BackgroundWandb(lambda: writer, lambda w: None)
  with bg.batched():  # a chunk's rows
    for step in (10, 20, 30):
      bg.write(step, {"train/loss": 1.0})
  bg.write(30, {"eval/loss": 2.0})  # the step's evaluation, after the batch: the same call
  bg.write_images(30, {"plots/loss": "loss.png"})
  with bg.batched():
    bg.write(40, {"train/loss": 1.0})
  bg.close(0)
  assert writer.calls == [
      ("message", [(10, ["train/loss"]), (20, ["train/loss"])]),
      ("message", [(30, ["eval/loss", "train/loss"])]),
      (30, {"plots/loss": "loss.png"}),
      ("message", [(40, ["train/loss"])])]


def test_a_failed_write_is_one_warning_and_later_writes_are_dropped(gmf_log):
  writer = _RecordingWriter(fail_on_step=5)
  open_fn, gate = _gated(writer)
  bg = BackgroundWandb(open_fn, lambda w: None)
  bg.write(4, {"a": 0.0})
  bg.write(5, {"a": 1.0})
  bg.write(6, {"a": 2.0})  # queued before 5 fails: dropped by the background thread
  gate.set()
  deadline = time.time() + 5
  while bg.error is None and time.time() < deadline:
    time.sleep(0.01)
  assert bg.error == "log: RuntimeError: wandb broke"
  for step in range(7, 10):  # after the failure: no-ops, nothing raised
    bg.write(step, {"a": float(step)})
  bg.write_images(10, {"plots/loss": "loss.png"})
  bg.close(0)
  assert writer.calls == [(4, {"a": 0.0})]
  assert writer.closed == 0  # still finished, so wandb's copy holds what was logged
  (message,) = _wandb_records(gmf_log)
  assert "failed to log (RuntimeError: wandb broke)" in message
  assert "the run folder has every metric" in message


def test_a_failed_finish_is_one_warning(gmf_log):
  class BrokenClose(_RecordingWriter):
    def close(self, exit_code=0):
      raise SystemExit(1)  # as wandb's teardown does when its service ended badly

  writer = BrokenClose()
  bg = BackgroundWandb(lambda: writer, lambda w: None)
  bg.write(1, {"a": 1.0})
  bg.close(0)  # does not raise
  assert writer.calls == [(1, {"a": 1.0})] and bg.error == "finish: SystemExit: 1"
  (message,) = _wandb_records(gmf_log)
  assert "failed to finish" in message and "the run folder has every metric" in message


def test_a_failed_start_is_one_warning_and_on_ready_is_never_called(gmf_log):
  def open_fn():
    raise OSError("disk full")

  ready = []
  bg = BackgroundWandb(open_fn, ready.append)
  for step in range(3):
    bg.write(step, {"a": 1.0})
  bg.close(0)
  assert ready == [] and bg.error == "start: OSError: disk full"
  (message,) = _wandb_records(gmf_log)
  assert "failed to start (OSError: disk full)" in message


def test_wandb_off_is_silent(gmf_log):
  ready = []
  bg = BackgroundWandb(lambda: None, ready.append)  # what WandbWriter.open returns when disabled
  bg.write(1, {"a": 1.0})
  bg.close(0)
  assert ready == [] and bg.error is None and _wandb_records(gmf_log) == []
