"""A run's status is always true: faults at every moment of its life, kill -9, live runs.

Faults land at exact moments through `gmf_jax.failpoints`: a real signal sent to the process
at a named point (handled by the run's real handlers), or SIGKILL. After each, the status is
not `running`, a rerun completes the run, and its final parameters and metrics are bitwise
those of an uninterrupted run.
"""

import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import orbax.checkpoint as ocp
import pytest

import gmf_jax
from gmf_jax import failpoints
from gmf_jax.runlog import effective_status
from gmf_jax.runlog.liveness import Heartbeat, liveness, process_identity
from gmf_jax.runlog.record import open_run_folder
from tests.conftest import CONFIGS, run_cli, tree_equal

VAE = str(CONFIGS / "vae.py")
# 120 steps in calls of 10; evaluations at 40, 80, 120; checkpoints every 50 and at the end;
# a diagnostic every 40 steps, so faults can land while one runs.
RUN = {"num_steps": 120, "steps_per_call": 10, "eval_every_steps": 40,
       "checkpoint.every_steps": 50}


def _config(**extra):
  config = gmf_jax.load_config(VAE + ":smoke", {**RUN, **extra})
  config.unlock()
  config.diagnostics.reconstructions = {"every_steps": 40, "num": 4}
  config.lock()
  return config


def _json(path):
  with open(path) as f:
    return json.load(f)


def _rows(workdir):
  import csv

  with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
    return sorted((r["step"], r["name"], r["value"]) for r in csv.DictReader(f))


def _final_params(workdir):
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  path = os.path.join(workdir, "checkpoints", str(steps[-1]), "state")
  return steps[-1], ocp.StandardCheckpointer().restore(path)["params"]


@pytest.fixture
def disarm():
  yield
  failpoints.arm(None)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run, in this process."""
  workdir = str(tmp_path_factory.mktemp("reference") / "ref")
  gmf_jax.train_and_evaluate(_config(), workdir)
  return workdir


# Every moment of a run's life: before the first step (the folder just written, the state being
# built, the first call compiling), mid-training, during an evaluation, a checkpoint save and
# the diagnostics, at a step without a checkpoint, and after the last step (its checkpoint and
# diagnostics, the final plots and the wandb finish; its evaluation: the CLI test below). The
# failpoints count: evaluations at 40, 80, 120; periodic checkpoints at 50, 100 and the final
# one at 120; diagnostics (reached at every step the host stops: 40, 50, 80, 100, 120). A
# signal before the last step preempts the run; one after it lets the run complete.
MOMENTS = [
    ("run_folder", "before the first step", "preempted"),
    ("init", "before the first step", "preempted"),
    ("first_call=SIGTERM+0.02", "while the first call compiles", "preempted"),
    ("train_call@4", "mid-training", "preempted"),
    ("train_call@11", "late in training", "preempted"),
    ("eval@2", "during an evaluation", "preempted"),
    ("checkpoint_save@2", "during a checkpoint save", "preempted"),
    ("diagnostics@1", "during diagnostics at a step without a checkpoint", "preempted"),
    ("diagnostics@3", "during diagnostics at an evaluation step (80)", "preempted"),
    ("checkpoint_save@3", "during the final checkpoint save (step 120)", "completed"),
    ("diagnostics@5", "during the last diagnostics (step 120)", "completed"),
    ("final_plots", "during the final plots", "completed"),
    ("wandb_finish", "during the wandb finish", "completed"),
]


@pytest.mark.parametrize("point, when, outcome", MOMENTS, ids=[m[0] for m in MOMENTS])
def test_sigterm_at_any_moment_leaves_a_true_status(tmp_path, reference, disarm, point, when,
                                                    outcome):
  failpoints.arm(point if "=" in point else f"{point}=SIGTERM")
  workdir = str(tmp_path / "run")
  try:
    gmf_jax.train_and_evaluate(_config(), workdir)
    preempted = None
  except gmf_jax.Preempted as e:
    preempted = e
  meta = _json(os.path.join(workdir, "metadata.json"))
  assert meta["status"] == outcome, (when, meta)
  if outcome == "completed":  # the signal came after the last step: the record is complete
    assert preempted is None and meta["error"] is None, when
    assert _json(os.path.join(workdir, "summary.json"))["status"] == "completed"
    assert _final_params(workdir)[0] == 120
    assert tree_equal(_final_params(workdir)[1], _final_params(reference)[1]), when
    assert _rows(workdir) == _rows(reference), when
  elif preempted.saved:  # the message says so: the checkpoint of that step is there
    assert meta["error"] == str(preempted)
    assert f"a checkpoint of step {preempted.step} was saved" in meta["error"]
    assert str(preempted.step) in os.listdir(os.path.join(workdir, "checkpoints"))
    assert 0 < preempted.step < 120
  else:
    assert meta["error"] == str(preempted)
    assert preempted.step == 0 and "before the first training step" in meta["error"]
  assert effective_status(workdir) == meta["status"]
  failpoints.arm(None)
  result = gmf_jax.train_and_evaluate(_config(), workdir)
  assert int(result.state.step) == 120
  assert _json(os.path.join(workdir, "metadata.json"))["status"] == "completed"
  assert tree_equal(_final_params(workdir)[1], _final_params(reference)[1]), when
  assert _rows(workdir) == _rows(reference), when


def test_sigterm_after_the_last_step_completes_the_cli_run_with_exit_0(tmp_path):
  """From the command line: a signal during the last evaluation, after the last training
  step, lets the run finish its record and exit 0 (not 143)."""
  args = [f"--config={VAE}:smoke", "--config.num_steps=30", "--config.steps_per_call=10",
          "--config.eval_every_steps=15", "--workdir=run"]
  proc = run_cli(*args, cwd=tmp_path, env={failpoints.ENV: "eval@2=SIGTERM"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "SIGTERM after the last step" in proc.stdout
  run = tmp_path / "run"
  meta = _json(run / "metadata.json")
  assert meta["status"] == "completed" and meta["error"] is None
  assert [s["status"] for s in meta["sessions"]] == ["completed"]
  assert _json(run / "summary.json")["status"] == "completed"
  assert "30" in os.listdir(run / "checkpoints")
  assert (run / "plots" / "metrics.png").exists()
  assert max(int(s) for s, _, _ in _rows(str(run))) == 30


def test_sigterm_inside_a_log_window_resumes_its_open_window(tmp_path, reference, disarm):
  """The checkpoint holds the open averaging window: stopped at step 25 (log steps are
  multiples of 10), the resumed run logs at step 30 the mean over steps 21..30, as the
  uninterrupted run does."""
  failpoints.arm("checkpoint_save@1=SIGTERM")
  workdir = str(tmp_path / "run")
  with pytest.raises(gmf_jax.Preempted) as info:  # checkpoint.every_steps may change on resume
    gmf_jax.train_and_evaluate(_config(**{"checkpoint.every_steps": 25}), workdir)
  assert info.value.step == 25
  failpoints.arm(None)
  gmf_jax.train_and_evaluate(_config(), workdir)
  rows = _rows(workdir)
  assert len(rows) == len({(s, n) for s, n, _ in rows})  # no duplicated rows
  assert rows == _rows(reference)  # train/* means over the window that straddles the stop
  assert tree_equal(_final_params(workdir)[1], _final_params(reference)[1])


def test_exception_before_the_loop_marks_the_run_failed(tmp_path, disarm):
  failpoints.arm("restore=raise")
  workdir = str(tmp_path / "run")
  with pytest.raises(failpoints.FailpointError):
    gmf_jax.train_and_evaluate(_config(), workdir)
  meta = _json(os.path.join(workdir, "metadata.json"))
  assert meta["status"] == "failed" and "FailpointError" in meta["error"]
  assert meta["sessions"][-1]["status"] == "failed"
  assert effective_status(workdir) == "failed"
  failpoints.arm(None)
  gmf_jax.train_and_evaluate(_config(), workdir)  # a rerun completes it
  meta = _json(os.path.join(workdir, "metadata.json"))
  assert meta["status"] == "completed" and meta["error"] is None
  assert [s["status"] for s in meta["sessions"]] == ["failed", "completed"]


def _cli_args(**extra):
  args = [f"--config={VAE}:smoke", "--config.num_steps=300", "--config.steps_per_call=10",
          "--config.eval_every_steps=100", "--config.checkpoint.every_steps=50",
          "--config.data.on_device=no"]  # streamed batches; the warmup_cosine schedule
  return args + [f"--config.{k}={v}" for k, v in extra.items()]


@pytest.fixture(scope="module")
def streamed_reference(tmp_path_factory):
  """The uninterrupted run of `_cli_args()`, in this process (the runs it is compared with are
  the command line's)."""
  workdir = str(tmp_path_factory.mktemp("streamed") / "ref")
  config_file, *overrides = _cli_args()
  gmf_jax.train_and_evaluate(gmf_jax.load_config(config_file.split("=", 1)[1], overrides), workdir)
  return workdir


# Kill points over the whole run of 30 calls: early (before any checkpoint), the middle, and
# while the last periodic checkpoint before the end (step 250) is being written.
KILLS = ["train_call@3", "train_call@15", "checkpoint_save@5"]


@pytest.mark.parametrize("point", KILLS)
def test_kill_9_then_resume_equals_uninterrupted(tmp_path, streamed_reference, point):
  # The reference reads in this process; one killed run reads through 2 grain reader
  # processes and resumes with 1: the batches follow the step, not the readers.
  workers = {"data.workers": 2} if point == "train_call@15" else {}
  proc = run_cli(*_cli_args(**workers), "--workdir=run", cwd=tmp_path,
                 env={failpoints.ENV: f"{point}=SIGKILL"})
  assert proc.returncode == -signal.SIGKILL, proc.stderr
  run = tmp_path / "run"
  meta = _json(run / "metadata.json")
  assert meta["status"] == "running"  # what it wrote last: it was killed unfinished
  assert effective_status(str(run)) == "crashed"
  steps = [int(s) for s in os.listdir(run / "checkpoints") if s.isdigit()]
  assert max(steps, default=0) < 300
  resumed = run_cli(*_cli_args(**{"data.workers": 1} if workers else {}), "--workdir=run",
                    cwd=tmp_path)
  assert resumed.returncode == 0, resumed.stderr
  latest = max(steps, default=0)
  said = (f"resuming from the checkpoint at step {latest}" if latest
          else "no usable checkpoint: restarting from step 0")
  assert said in resumed.stdout
  meta = _json(run / "metadata.json")
  assert meta["status"] == "completed"
  assert [s["status"] for s in meta["sessions"]] == ["crashed", "completed"]
  assert tree_equal(_final_params(run)[1], _final_params(streamed_reference)[1]), point
  assert _rows(run) == _rows(streamed_reference), point


def _wait_for(predicate, proc, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if predicate():
      return
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.05)
  raise TimeoutError


def test_a_live_run_is_running_then_crashed_after_kill_9_and_its_folder_is_guarded(tmp_path):
  cmd = [sys.executable, "-m", "gmf_jax.main", *_cli_args(**{"num_steps": 100000}),
         "--workdir=run"]
  proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  run = str(tmp_path / "run")
  try:
    _wait_for(lambda: os.path.exists(os.path.join(run, "metrics.csv")), proc)
    meta = _json(os.path.join(run, "metadata.json"))
    assert meta["process"]["pid"] == proc.pid
    assert meta["process"]["hostname"] == socket.gethostname()
    assert meta["sessions"][-1]["pid"] == proc.pid
    assert isinstance(meta["heartbeat"]["unix"], float)
    assert effective_status(run) == "running"
    # A second process on the same folder is refused, and changes nothing; so is a backfill of
    # diagnostics. Both run side by side, so the live run trains (and burns CPU) half as long.
    before = open(os.path.join(run, "config.json")).read()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      second = pool.submit(run_cli, *_cli_args(**{"num_steps": 100000}), "--workdir=run",
                           cwd=tmp_path)
      backfill = pool.submit(run_cli, "--workdir=run", "--diagnostics=weight_stats",
                             cwd=tmp_path, module="gmf_jax.diagnose")
      second, backfill = second.result(), backfill.result()
    assert second.returncode == 2 and "is in use by a live run" in second.stderr
    assert f"pid {proc.pid}" in second.stderr
    assert open(os.path.join(run, "config.json")).read() == before
    assert backfill.returncode == 2 and "is a live run" in backfill.stderr
  finally:
    proc.kill()
    proc.wait()
  assert _json(os.path.join(run, "metadata.json"))["status"] == "running"
  assert effective_status(run) == "crashed"


def test_heartbeat_is_rewritten_while_the_run_lives(tmp_path):
  folder = open_run_folder(str(tmp_path / "run"), {"seed": 0}, None)
  first = _json(tmp_path / "run" / "metadata.json")["heartbeat"]
  assert first["step"] is None  # not known until the state is restored
  heartbeat = Heartbeat(folder.beat, every=0.05).start()
  heartbeat.step = 7
  time.sleep(0.3)
  heartbeat.stop()
  beat = _json(tmp_path / "run" / "metadata.json")["heartbeat"]
  assert beat["step"] == 7 and beat["unix"] > first["unix"]
  folder.set_status("completed")
  assert effective_status(str(tmp_path / "run")) == "completed"


def test_stale_heartbeat_or_a_gone_process_means_crashed():
  now = time.time()
  elsewhere = {"pid": 1, "hostname": "another-node", "boot_id": "x", "start_ticks": 1}
  fresh = {"status": "running", "process": elsewhere, "heartbeat": {"unix": now - 5, "step": 3}}
  stale = {"status": "running", "process": elsewhere, "heartbeat": {"unix": now - 600}}
  assert liveness(fresh, now=now)[0] == "running"
  assert liveness(stale, now=now) == ("crashed",
                                      "its heartbeat (pid 1 on another-node) is 600 s old")
  me = process_identity()
  alive = {"status": "running", "process": me, "heartbeat": {"unix": now}}
  assert liveness(alive, now=now)[0] == "running"
  gone = {**me, "pid": _a_dead_pid()}
  assert liveness({"status": "running", "process": gone, "heartbeat": {"unix": now}},
                  now=now)[0] == "crashed"  # same host, process gone: no need to wait
  reused = {**me, "start_ticks": me["start_ticks"] + 1}  # the pid now names another process
  assert liveness({"status": "running", "process": reused, "heartbeat": {"unix": now}},
                  now=now)[0] == "crashed"
  suspended = {"status": "running", "process": me, "heartbeat": {"unix": now - 600}}
  assert liveness(suspended, now=now)[0] == "running"  # alive here: the process decides
  assert liveness({"status": "running"}, now=now)[0] == "crashed"  # nothing shows it lives
  for status in ("completed", "failed", "preempted"):
    assert liveness({**stale, "status": status}, now=now)[0] == status


def _a_dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def test_a_signal_while_rerunning_a_completed_run_changes_nothing(tmp_path, reference, disarm):
  workdir = str(tmp_path / "run")
  shutil.copytree(reference, workdir)  # a completed run (of 120 steps)
  failpoints.arm("init=SIGTERM")
  result = gmf_jax.train_and_evaluate(_config(), workdir)  # nothing to train
  assert int(result.state.step) == 120
  assert _json(os.path.join(workdir, "metadata.json"))["status"] == "completed"


def test_a_folder_whose_metadata_was_lost_can_be_resumed(tmp_path, reference):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)  # a completed run of 120 steps, extended below
  (workdir / "metadata.json").unlink()  # nothing shows a live run owns the folder
  result = gmf_jax.train_and_evaluate(_config(num_steps=140), str(workdir))
  assert int(result.state.step) == 140
  assert _json(workdir / "metadata.json")["status"] == "completed"
