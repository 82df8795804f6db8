"""Where a sweep's populations run: in this process, in local processes, or as Slurm jobs.

Every executor ends in `run.run_population`, in some process: the `local` and `submitit`
executors start `python -m gmf_jax.sweep --population=<id>` workers (or submitit jobs calling
the same), which read their members from `sweep.json`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any

from gmf_jax.errors import ConfigError
from gmf_jax.runlog.files import read_json
from gmf_jax.sweep import ledger
from gmf_jax.sweep import run as run_lib

log = logging.getLogger("gmf_jax")


class SweepStopped(Exception):
  """SIGTERM or Ctrl-C stopped a sweep run by workers: each stopped population saved a
  checkpoint and marked its members `preempted`."""

  def __init__(self, signum: int):
    self.signum = signum
    super().__init__(f"stopped by {signal.Signals(signum).name}; running populations saved "
                     "checkpoints. Run the same command with the same --workdir to resume.")

  @property
  def exit_code(self) -> int:
    return 128 + self.signum


def run_in_process(plan: run_lib.SweepPlan, populations: list[run_lib.Population],
                   built: dict[str, tuple] | None = None) -> None:
  """The `vmap` executor: populations one after another, each one vmapped program (`built`:
  each population's experiments, built by the checks before the sweep started)."""
  built = dict(built or {})
  total = len(plan.sweep.members)
  for i, population in enumerate(populations):
    log.info("population %s (%d of %d): %d members", population.id, i + 1, len(populations),
             len(population.members))
    session = run_lib.run_population(plan, population, built.pop(population.id, None))
    left_alone = total - sum(sum(p.train) for p in populations)  # done in earlier sessions
    done = left_alone + sum(sum(p.train) for p in populations[:i + 1])
    log.info("sweep %s: %d of %d members done (%s in population %s)", plan.sweep.name,
             done, total, run_lib.describe(m.status for m in session.members), population.id)


def _record_populations(plan: run_lib.SweepPlan, populations: list[run_lib.Population]) -> None:
  """Writes which members each worker trains into sweep.json (workers read it)."""
  def change(data):
    data["work"] = {p.id: {"members": [m.name for m in p.members], "train": p.train}
                    for p in populations}

  ledger.update(plan.workdir, change)


def worker_command(plan: run_lib.SweepPlan, population_id: str) -> list[str]:
  """The command that trains one population of `plan` in a process of its own."""
  return [sys.executable, "-m", "gmf_jax.sweep", f"--sweep={plan.sweep.file}",
          f"--workdir={plan.workdir}", f"--population={population_id}"]


def run_worker(sweep_file: str, workdir: str, population_id: str) -> None:
  """A worker: trains population `population_id` as the sweep's folder records it."""
  data = read_json(os.path.join(workdir, run_lib.SWEEP_FILE))
  work = data.get("work", {}).get(population_id)
  if work is None:
    raise ConfigError(f"{workdir}/sweep.json has no population {population_id!r} to run.")
  from gmf_jax.sweep import spec as spec_lib

  sweep = spec_lib.load_sweep(sweep_file, data["definition"].get("overrides") or None)
  if sweep.seed_rounds is not None:  # the members of every recorded round
    from gmf_jax.sweep import seed_rounds

    sweep = seed_rounds.planned(sweep, data)
  by_name = {m.name: m for m in sweep.members}
  members = [by_name[n] for n in work["members"]]
  configs = {m.name: run_lib.member_config(sweep, m) for m in members}
  plan = run_lib.SweepPlan(sweep, workdir, configs, [], {})
  run_lib.run_population(plan, run_lib.Population(population_id, members, work["train"]))


def run_local(plan: run_lib.SweepPlan, populations: list[run_lib.Population], *,
              max_workers: int) -> None:
  """The `local` executor: one process per population, `max_workers` at a time; every 30 s a
  line says how many members are completed, running, failed and waiting.

  SIGTERM or Ctrl-C is passed on to every worker, which checkpoints and stops; then
  `SweepStopped` is raised.
  """
  check_max_workers(max_workers)
  _record_populations(plan, populations)
  pending = list(populations)
  running: dict[str, subprocess.Popen] = {}
  stopped: list[int] = []

  def on_signal(signum, frame):
    stopped.append(signum)
    for proc in running.values():
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)

  previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
  failures = []
  next_report = time.monotonic() + REPORT_EVERY_SEC
  try:
    while pending or running:
      while pending and len(running) < max_workers and not stopped:
        population = pending.pop(0)
        log.info("starting population %s (%d members) in a process of its own", population.id,
                 len(population.members))
        running[population.id] = subprocess.Popen(worker_command(plan, population.id))
      for pid, proc in list(running.items()):
        code = proc.poll()
        if code is not None:
          del running[pid]
          if code not in (0, 1) and not stopped:  # 1: some member failed (non-finite)
            failures.append(f"population {pid} exited with status {code}")
      if stopped and not running:
        break
      if time.monotonic() >= next_report:
        next_report = time.monotonic() + REPORT_EVERY_SEC
        log.info("sweep %s: %s", plan.sweep.name, member_counts(plan))
      time.sleep(0.05)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  if stopped:
    raise SweepStopped(stopped[0])
  if failures:
    log.warning("warning: %s; its members' folders say why.", "; ".join(failures))


REPORT_EVERY_SEC = 30.0


def check_max_workers(max_workers) -> None:
  """The local executor's `max_workers`: an integer >= 1 (ConfigError otherwise)."""
  if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
    raise ConfigError(f"--max_workers={max_workers!r} must be an integer >= 1.")


def member_counts(plan: run_lib.SweepPlan) -> str:
  """`12 completed, 4 running, 0 failed...`: the members' statuses as their folders say."""
  return run_lib.describe(run_lib.member_status(plan.member_dir(m.name), missing="waiting")
                          for m in plan.sweep.members)


def check_submitit_options(options: Mapping[str, Any]) -> None:
  """Options submitit refuses (an unknown or ill-typed parameter, an unknown cluster, Slurm
  asked for where there is none) as one ConfigError. Writes nothing in the sweep's folder:
  the executor made to check them lives in a temporary folder; its warnings (a deprecated
  name) are left to the real one."""
  import tempfile
  import warnings

  with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
    warnings.simplefilter("ignore")
    _submitit_executor(folder, options)


def _submitit_executor(folder: str, options: Mapping[str, Any]):
  """An `AutoExecutor` keeping its logs in `folder`/<job id> (created now), with `options`."""
  try:
    import submitit
  except ImportError as e:
    raise ConfigError("--executor=submitit needs the submitit package: pip install "
                      "submitit.") from e
  options = dict(options)
  cluster = options.pop("cluster", None)
  options.setdefault("timeout_min", 60 * 24)
  try:
    executor = submitit.AutoExecutor(folder=os.path.join(folder, "%j"), cluster=cluster)
    executor.update_parameters(**options)
  except (AssertionError, NameError, RuntimeError, TypeError, ValueError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(f"--slurm options refused by submitit: {first}") from e
  return executor


class _PopulationJob:
  """A submitit job: trains one population; requeued (resuming from its checkpoint) when Slurm
  preempts it or its time runs out."""

  def __init__(self, sweep_file: str, workdir: str):
    self.sweep_file, self.workdir = sweep_file, workdir

  def __call__(self, population_id: str) -> str:
    run_worker(self.sweep_file, self.workdir, population_id)
    return population_id

  def checkpoint(self, population_id: str):
    import submitit

    return submitit.helpers.DelayedSubmission(self, population_id)


def run_submitit(plan: run_lib.SweepPlan, populations: list[run_lib.Population],
                 options: Mapping[str, Any]) -> None:
  """The `submitit` executor: every population one Slurm job of a job array (submitit's local
  executor where there is no Slurm), waited for here."""
  _record_populations(plan, populations)
  if not populations:
    return
  executor = _submitit_executor(os.path.join(plan.workdir, "submitit"), options)
  job = _PopulationJob(plan.sweep.file, plan.workdir)
  jobs = executor.map_array(job, [p.id for p in populations])
  log.info("submitted %d populations as %s jobs %s", len(jobs), executor.cluster,
           ", ".join(j.job_id for j in jobs))
  errors = []
  for j in jobs:
    try:
      j.result()
    except Exception as e:  # noqa: BLE001 - each population's members record their own status
      errors.append(f"job {j.job_id}: {str(e).strip().splitlines()[-1] if str(e) else e}")
  if errors:
    log.warning("warning: %s", "; ".join(errors))
