"""Running a sweep: its folder and `sweep.json`, grouping members into populations, resume.

    runs/<sweep>/sweep.json             the definition; every member's name, overrides, seed,
                                        population, status and folder
    runs/<sweep>/<member>/              a complete run folder per member
    runs/<sweep>/populations/<id>/      the stacked checkpoint of each population

Members are grouped into populations by everything that changes the program (shapes, names,
batch size, num_steps...; see `gmf_jax.train.hparams.program_key`); each population trains in
one vmapped program, split to at most `max_population` members. Running the same sweep again
skips completed members, resumes preempted and crashed ones from their checkpoints, and leaves
failed ones alone unless `retry_failed` (they then start again from step 0).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import logging
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from gmf_jax import cpu_devices
from gmf_jax.errors import ConfigError
from gmf_jax.job import job_arguments
from gmf_jax.runlog.files import read_json
from gmf_jax.runlog.record import foreign_entries
from gmf_jax.sweep import early_stop, ledger, seed_rounds
from gmf_jax.sweep import pbt as pbt_lib
from gmf_jax.sweep import spec as spec_lib

log = logging.getLogger("gmf_jax")

EXECUTORS = ("vmap", "local", "submitit")
SWEEP_FILE = ledger.SWEEP_FILE
POPULATIONS_DIR = "populations"


@dataclasses.dataclass
class Population:
  """Members that train together in one program."""

  id: str
  members: list[spec_lib.Member]
  train: list[bool]  # per member: whether it trains in this session (else it rides along)


@dataclasses.dataclass
class SweepPlan:
  """A sweep resolved against its folder: member configs, populations, what to train."""

  sweep: spec_lib.Sweep
  workdir: str
  configs: dict[str, Any]  # member name -> its config
  populations: list[Population]
  statuses: dict[str, str]  # member name -> status before this session ('new' if never run)
  pending: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # early-termination
  # decisions recorded and saved but not yet applied to the members' records (`catch_up`)

  def member_dir(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def population_dir(self, population_id: str) -> str:
    return os.path.join(self.workdir, POPULATIONS_DIR, population_id)


@dataclasses.dataclass
class SweepResult:
  """What `run_sweep` returns: the folder and each member's status."""

  workdir: str
  statuses: dict[str, str]  # member name -> completed | failed | preempted | ...

  def counts(self) -> dict[str, int]:
    return dict(collections.Counter(self.statuses.values()))

  def describe(self) -> str:
    """`14 completed, 2 failed`."""
    return describe(self.statuses.values())

  @property
  def all_completed(self) -> bool:
    return set(self.statuses.values()) <= {"completed", "stopped"}


def describe(statuses: Iterable[str]) -> str:
  """Counts of statuses in words: `14 completed, 2 failed`."""
  return ", ".join(f"{n} {s}" for s, n in sorted(collections.Counter(statuses).items()))


def member_status(folder: str, missing: str = "new") -> str:
  """A member's status as its folder says (`effective_status`), or `missing` before it ran."""
  from gmf_jax.runlog.liveness import effective_status

  if not os.path.exists(os.path.join(folder, "config.json")):
    return missing
  return effective_status(folder)


def _check_one_process(config) -> None:
  """Sweeps and seed ensembles train in one process (several local devices: mesh.members)."""
  if job_arguments(config.get("distributed") or {}) is not None:
    raise ConfigError(
        "a sweep or seed ensemble runs in one process, but this job describes several "
        "(distributed.* or the Slurm/JAX environment); spread its members over one host's "
        "devices with --config.mesh.members, or run single runs across processes.")


def plan_sweep(sweep: spec_lib.Sweep, workdir: str | None = None, *,
               max_population: int | None = None, retry_failed: bool = False) -> SweepPlan:
  """Checks the sweep against its folder and groups its members; writes nothing.

  Raises:
    ConfigError: a member's bad config (as far as loading it tells; building it is
      `check_populations`), a folder holding a different sweep or something else, a bad
      max_population.
  """
  from gmf_jax.train.hparams import program_key

  if max_population is not None and (not isinstance(max_population, int) or max_population < 1):
    raise ConfigError(f"--max_population={max_population!r} must be an integer >= 1.")
  workdir = os.path.abspath(workdir or os.path.join("runs", sweep.name))
  _check_same_sweep(workdir, sweep)
  configs = {m.name: member_config(sweep, m) for m in sweep.members}
  for config in configs.values():  # a parameter may set distributed.* in some members only
    _check_one_process(config)
  statuses = {m.name: member_status(os.path.join(workdir, m.name)) for m in sweep.members}
  saved = _read_sweep_json(workdir)
  recorded = {r["name"]: r.get("population") for r in (saved or {}).get("members", [])}
  pending = []
  if sweep.early_terminate is not None and saved is not None:
    from gmf_jax.sweep import stopping

    pending = stopping.applicable(workdir, os.path.join(workdir, POPULATIONS_DIR))
    for decision in pending:  # applied before this session trains (`catch_up`)
      statuses.update({n: "stopped" for n in decision["stopped"]
                       if statuses[n] not in ("failed", "new")})
      recorded.update({n: decision["to"] for n in decision["continued"]})
  groups: dict[tuple, list[spec_lib.Member]] = {}
  for m in sweep.members:  # a seed round's members train in populations of their own
    groups.setdefault((m.round, program_key(configs[m.name])), []).append(m)
  populations = []
  index = collections.Counter()  # groups so far per round
  for (round_, _), members in groups.items():
    i, prefix = index[round_], f"r{round_}." if round_ else ""
    index[round_] += 1
    size = max_population or len(members)
    shrunk: dict[str, list[spec_lib.Member]] = {}  # populations that went on smaller
    for m in members:
      if statuses[m.name] != "stopped" and "@" in (recorded.get(m.name) or ""):
        shrunk.setdefault(recorded[m.name], []).append(m)
    for j in range(0, len(members), size):
      chunk = [m for m in members[j:j + size] if statuses[m.name] != "stopped"
               and not any(m in ms for ms in shrunk.values())]
      if not chunk:
        continue
      pid = f"{prefix}p{i}" if size >= len(members) else f"{prefix}p{i}.{j // size}"
      # A rerun keeps the populations of the first session (their checkpoints hold them).
      ids = {recorded.get(m.name) for m in chunk} - {None}
      pid = ids.pop() if len(ids) == 1 else pid
      populations.append(Population(pid, chunk, [_trains(statuses[m.name], retry_failed)
                                                 for m in chunk]))
    for pid, chunk in shrunk.items():
      populations.append(Population(pid, chunk, [_trains(statuses[m.name], retry_failed)
                                                 for m in chunk]))
  if retry_failed:
    populations = _split_retries(populations, statuses)
  return SweepPlan(sweep, workdir, configs, populations, statuses, pending)


def member_config(sweep: spec_lib.Sweep, member: spec_lib.Member):
  """The member's config; its wandb run is grouped by the sweep's name unless set."""
  config = spec_lib.member_config(sweep, member)
  if config.wandb.group is None:
    config.wandb.group = sweep.name
  return config


def _trains(status: str, retry_failed: bool) -> bool:
  if status in ("completed", "stopped"):
    return False
  if status == "failed":
    return retry_failed
  return True  # new, preempted, crashed (a live run is refused when its folder is opened)


def _split_retries(populations: list[Population], statuses: dict[str, str]) -> list[Population]:
  """Failed members retried start from step 0: in a population of their own (the old one's
  checkpoint holds no valid state of them)."""
  out = []
  for p in populations:
    retried = [m for m, t in zip(p.members, p.train, strict=True)
               if t and statuses[m.name] == "failed"]
    rest = [(m, t and statuses[m.name] != "failed") for m, t in zip(p.members, p.train,
                                                                    strict=True)]
    out.append(Population(p.id, [m for m, _ in rest], [t for _, t in rest]))
    if retried:
      out.append(Population(f"{p.id}-retry-{_stamp()}", retried, [True] * len(retried)))
  return out


def _stamp() -> str:
  return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def _check_same_sweep(workdir: str, sweep: spec_lib.Sweep) -> None:
  """The folder is new, empty, or holds this sweep (a rerun); anything else is refused."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir={workdir} is a file, not a folder; choose another folder. "
                      "Nothing was changed.")
  saved = _read_sweep_json(workdir)
  if saved is None:
    if os.path.exists(os.path.join(workdir, "config.json")):
      raise ConfigError(f"--workdir={workdir} holds a single run, not a sweep; choose another "
                        "folder. Nothing was changed.")
    shown = foreign_entries(workdir)
    if shown:
      raise ConfigError(f"--workdir={workdir} is not empty ({shown}) and holds no {SWEEP_FILE}: "
                        "not a gmf_jax sweep. Choose a new or empty folder. Nothing was changed.")
    return
  diff = spec_lib.definition_differences(_comparable(saved["definition"]),
                                         _comparable(sweep.definition))
  if diff:
    raise ConfigError(
        f"--workdir={workdir} holds a sweep with a different definition; rerunning would mix "
        f"two sweeps. Differences (saved -> now): {'; '.join(diff)}. Use a new --workdir, or "
        "the saved definition (sweep.json). Nothing was changed.")


def _comparable(definition: Mapping[str, Any]) -> dict[str, Any]:
  """The definition without what may differ between machines (the absolute config path)."""
  return {k: v for k, v in definition.items() if k != "config_resolved"}


def _read_sweep_json(workdir: str) -> dict[str, Any] | None:
  try:
    return ledger.read(workdir)
  except (OSError, ValueError) as e:
    path = os.path.join(workdir, SWEEP_FILE)
    raise ConfigError(f"{path} cannot be read ({e}); move it away to start the sweep anew.") from e


def write_sweep_json(plan: SweepPlan, executor: str) -> None:
  """sweep.json: the definition and every member's name, overrides, seed, population, status
  and folder (statuses read from the member folders), and with seed rounds its round and
  round 0's plan. What else it holds (early termination's record, the seed rounds' record, a
  population a member moved to since the plan) is kept."""
  population_of = {m.name: p.id for p in plan.populations for m, t in zip(p.members, p.train,
                                                                          strict=True) if t}

  def change(data: dict[str, Any]) -> None:
    recorded = {r["name"]: r.get("population") for r in data.get("members", [])}
    members = []
    for m in plan.sweep.members:
      members.append({"name": m.name, "overrides": m.overrides, "seed": m.seed,
                      "population": _newest(population_of.get(m.name), recorded.get(m.name)),
                      "status": member_status(plan.member_dir(m.name)), "folder": m.name,
                      **({"round": m.round} if plan.sweep.seed_rounds else {})})
    populations = data.get("populations", {})
    populations.update({p.id: [m.name for m in p.members] for p in plan.populations})
    data.update(name=plan.sweep.name, file=plan.sweep.file, executor=executor,
                definition=plan.sweep.definition, members=members, populations=populations)
    if plan.sweep.seed_rounds is not None:
      seed_rounds.start(data, plan.sweep)

  ledger.update(plan.workdir, change)


def _newest(planned: str | None, recorded: str | None) -> str | None:
  """A member's population: the one a shrink moved it to since the plan, else the plan's."""
  if planned is None or recorded is None:
    return planned or recorded
  later = (ledger.population_base(recorded) == ledger.population_base(planned)
           and ledger.population_step(recorded) > ledger.population_step(planned))
  return recorded if later else planned


def run_sweep(sweep: spec_lib.Sweep | str, workdir: str | None = None, *,
              executor: str = "vmap", overrides: Mapping[str, Any] | Iterable[str] | None = None,
              retry_failed: bool = False, max_population: int | None = None,
              max_workers: int = 2, submitit_options: Mapping[str, Any] | None = None
              ) -> SweepResult:
  """Runs a sweep: every population trained in one vmapped program, each member recorded in
  its own run folder under `workdir` (default `runs/<sweep name>`). A sweep whose `seeds` has
  `until` runs its seed rounds to the end, one pass per round (`gmf_jax.sweep.seed_rounds`).

  Args:
    sweep: a sweep file's path (`sweeps/vae_lr_beta.py`) or a `gmf_jax.sweep.Sweep`.
    workdir: the sweep folder; running again resumes it.
    executor: 'vmap' (populations one after another in this process), 'local' (a process
      per population, `max_workers` at a time) or 'submitit' (a Slurm job per population, as a
      job array; on a machine without Slurm, submitit's local executor).
    overrides: applied to every member (with a sweep file's path).
    retry_failed: train failed members again, from step 0.
    max_population: the most members one program trains (memory); larger groups are split.
    submitit_options: passed to `submitit.AutoExecutor.update_parameters` (e.g. partition,
      timeout_min, gpus_per_node).

  Returns:
    The folder and every member's status.

  Raises:
    ConfigError: bad input, before anything is written: a bad value for any member of any
      population (every member is built and checked first, see `check_populations`), or a
      `workdir` that holds something other than this sweep.
    Preempted: SIGTERM or Ctrl-C: the running population was checkpointed, its members are
      `preempted`; running the same command again resumes them.
  """
  from gmf_jax.sweep import executors
  from gmf_jax.train.progress import console_logging

  console_logging()
  if executor not in EXECUTORS:
    raise ConfigError(f"--executor={executor!r} is unknown; choose from {', '.join(EXECUTORS)}.")
  if executor == "local":
    executors.check_max_workers(max_workers)
  elif executor == "submitit":
    executors.check_submitit_options(submitit_options or {})
  if isinstance(sweep, str):
    sweep = spec_lib.load_sweep(sweep, overrides)
  elif overrides:
    raise ConfigError("overrides apply to a sweep file; a Sweep object has its own.")
  if executor != "vmap" and sweep.file is None:
    raise ConfigError(f"--executor={executor} runs populations in other processes, which load "
                      "the sweep from its file: pass a sweep file's path.")
  if sweep.seed_rounds is not None:
    workdir = os.path.abspath(workdir or os.path.join("runs", sweep.name))
  figures_ready = None
  while True:  # one pass, or with seed rounds one per round (see gmf_jax.sweep.seed_rounds)
    current = sweep
    if sweep.seed_rounds is not None:
      _check_same_sweep(workdir, sweep)  # before its rounds are read
      current = seed_rounds.planned(sweep, _read_sweep_json(workdir))
    plan, statuses, figures_ready = _train(
        current, workdir, executor=executor, retry_failed=retry_failed,
        max_population=max_population, max_workers=max_workers,
        submitit_options=submitit_options, figures_ready=figures_ready)
    if sweep.seed_rounds is None or not seed_rounds.advance(current, plan.workdir, statuses):
      break
  result = SweepResult(plan.workdir, statuses)
  log.info("sweep %s: %s", sweep.name, result.describe())
  draw_population_figures(plan.workdir, figures_ready)
  return result


def _train(sweep: spec_lib.Sweep, workdir: str | None, *, executor: str, retry_failed: bool,
           max_population: int | None, max_workers: int,
           submitit_options: Mapping[str, Any] | None, figures_ready):
  """One pass of `run_sweep` over the sweep's members: plan, check every member, train what
  is left. Returns the plan, every member's status (sweep.json's) and the figures' warm-up."""
  from gmf_jax.sweep import executors

  plan = plan_sweep(sweep, workdir, max_population=max_population, retry_failed=retry_failed)
  todo = [p for p in plan.populations if any(p.train)]
  if executor == "vmap":  # a command line's populations use every CPU core (before JAX starts)
    cpu_devices.spread([len(p.members) for p in todo],
                       [plan.configs[p.members[0].name].mesh for p in todo])
  with _no_gpu_memory_claimed(executor != "vmap"):  # workers train, not this process
    built = check_populations(plan, todo)  # every member, before the first file of the sweep
  done = len(plan.sweep.members) - sum(sum(p.train) for p in plan.populations)
  log.info("sweep %s: %d members in %d populations; %d to train, %d done or left alone "
           "(folder %s)", sweep.name, len(sweep.members), len(plan.populations),
           sum(sum(p.train) for p in todo), done, plan.workdir)
  if plan.pending:
    from gmf_jax.sweep import stopping

    stopping.catch_up(plan.workdir, sweep.early_terminate, plan.pending,
                      os.path.join(plan.workdir, POPULATIONS_DIR))
  write_sweep_json(plan, executor)
  if figures_ready is None:
    figures_ready = _warm_up_figures()
  try:
    if executor == "vmap":
      executors.run_in_process(plan, todo, built)
    elif executor == "local":
      executors.run_local(plan, todo, max_workers=max_workers)
    else:
      executors.run_submitit(plan, todo, submitit_options or {})
  finally:
    write_sweep_json(plan, executor)
  statuses = {m["name"]: m["status"]
              for m in read_json(os.path.join(plan.workdir, SWEEP_FILE))["members"]}
  return plan, statuses, figures_ready


def _warm_up_figures():
  """Imports what the population figures need (pandas) and draws a first figure, in a thread
  beside the training (which leaves a core idle while it compiles); None if that cannot start."""
  try:
    from gmf_jax.runlog import plots

    return plots.warm_up(imports=("gmf_jax.analysis.loading", "gmf_jax.analysis.plots"))
  except Exception as e:  # noqa: BLE001 - only a head start
    log.debug("figures' warm-up failed (%s)", e)
    return None


def draw_population_figures(workdir: str, ready=None) -> list[str]:
  """Every member's curves in `<workdir>/plots/` (`gmf_jax.plot.plot_population`): a figure
  per metric family for all members, never one per member. A failure is a warning: the
  members' records are complete, and `python -m gmf_jax.plot <workdir>` draws them later.

  Args:
    workdir: the sweep folder.
    ready: a `runlog.plots.warm_up` thread to wait for first, if any.

  Returns:
    The PNG paths written (none after a failure).
  """
  start = time.perf_counter()
  try:
    if ready is not None:
      ready.join()
    from gmf_jax.plot import plot_population

    paths = plot_population(workdir)
  except Exception as e:  # noqa: BLE001 - figures are a view of the record, never its truth
    log.warning("warning: the population figures were not drawn (%s: %s); `python -m "
                "gmf_jax.plot %s` draws them from the members' files.", type(e).__name__, e,
                workdir)
    return []
  log.info("population figures: %s (%.1f s)", os.path.join(workdir, "plots"),
           time.perf_counter() - start)
  return paths


def run_seed_ensemble(config, workdir: str | None = None) -> SweepResult:
  """`config.num_seeds` seeds (seed, seed+1, ...) of a config from `load_config`, as one
  sweep: one vmapped program, a run folder per seed under `workdir` (default
  `runs/<name>-seeds-<time>-<id>`). What `--config.num_seeds=N` means on the command line.

  Raises:
    ConfigError: a config made in Python (no file to rebuild the members from), or a bad
      num_seeds.
  """
  from gmf_jax.checks import check_int
  from gmf_jax.config import config_origin, flatten, same_value
  from gmf_jax.runlog.workdir import new_run_dir

  check_int("num_seeds", config.num_seeds, low=1, hint="Each seed is a member of the ensemble.")
  file, variant = getattr(config, "_gmf_config_source", (None, None))
  origin = config_origin(config)
  if file is None or origin.file_values is None:
    raise ConfigError("num_seeds > 1 needs a config from gmf_jax.load_config (its members are "
                      "rebuilt from the file); or run a sweep with gmf_jax.run_sweep.")
  overrides = {k: v for k, v in flatten(config).items()
               if k != "num_seeds" and (k in origin.overridden or not same_value(
                   origin.file_values.get(k), v))}
  sweep = spec_lib.seed_ensemble(f"{file}:{variant}" if variant else file, config.num_seeds,
                                 overrides)
  return run_sweep(sweep, workdir or new_run_dir(f"{config.name}-seeds"))


def check_populations(plan: SweepPlan, populations: list[Population]) -> dict[str, tuple]:
  """Builds and checks every member of `populations` as `train_population` does before it
  trains: `build_population` (each member's config, that members share one program, the
  mesh), one process, the compilation cache folder, and `check_run_folder` for every member
  that trains. Writes nothing in the sweep's folder, and neither trains nor compiles the
  training program: a member's build traces its model abstractly (`gmf_jax.train.build`).

  Returns:
    {population id: its `build_population`}, for `run_population` in this process.

  Raises:
    ConfigError: the first bad member, population or member folder.
  """
  from gmf_jax import compile_cache
  from gmf_jax.runlog.record import check_run_folder
  from gmf_jax.train.loop import build_population, check_one_process

  built = {}
  for population in populations:
    setups = _setups(plan, population)
    built[population.id] = exps, resolved = build_population(setups)
    early_stop.check_against(plan.sweep.early_terminate, plan.sweep.metric, exps[0],
                             plan.sweep.name)
    pbt_lib.check_against(plan.sweep.pbt, exps, plan.sweep.name)
    check_one_process()
    compile_cache.enable(exps[0].config.compile_cache)
    for setup, config in zip(setups, resolved, strict=True):
      if setup.train:
        check_run_folder(setup.workdir, config)
  return built


@contextlib.contextmanager
def _no_gpu_memory_claimed(active: bool):
  """While active, a JAX backend started here claims GPU memory as it needs it, not most of
  it up front: the local and submitit executors' workers need it. XLA reads the setting once,
  when this process's first backend starts; the user's own setting is kept, and workers
  started later see the environment as it was."""
  key = "XLA_PYTHON_CLIENT_PREALLOCATE"
  if not active or key in os.environ:
    yield
    return
  os.environ[key] = "false"
  try:
    yield
  finally:
    os.environ.pop(key, None)


def _setups(plan: SweepPlan, population: Population) -> list:
  """The `MemberSetup` of each member of `population`, as `train_population` takes them."""
  from gmf_jax.train.recorder import MemberSetup

  file, variant = plan.sweep.config, None
  if not os.path.isfile(file) and ":" in file:
    file, _, variant = file.rpartition(":")
  return [MemberSetup(plan.configs[m.name], plan.member_dir(m.name), file, variant or None,
                      m.name, train)
          for m, train in zip(population.members, population.train, strict=True)]


def run_population(plan: SweepPlan, population: Population, built: tuple | None = None):
  """Trains one population of the plan in this process (every executor ends here); `built`:
  its `build_population`, where `check_populations` made it in this process."""
  from gmf_jax.train.loop import DEFAULT_ACTIONS, train_population
  from gmf_jax.train.saving import make_checkpoint

  setups = _setups(plan, population)
  label = f"{plan.sweep.name}/{population.id} ({len(setups)} members)"
  actions = list(DEFAULT_ACTIONS)
  order = {m.name: i for i, m in enumerate(plan.sweep.members)}
  rule, pbt = plan.sweep.early_terminate, plan.sweep.pbt
  if rule is not None:
    from gmf_jax.sweep.stopping import make_early_stop

    actions.append(make_early_stop(rule, ledger.Ledger(plan.workdir), order,
                                   os.path.join(plan.workdir, POPULATIONS_DIR)))
  if pbt is not None:  # after the best checkpoint's pick, before the periodic checkpoint
    from gmf_jax.sweep.exploit import make_pbt

    actions.insert(actions.index(make_checkpoint),
                   make_pbt(pbt, ledger.PbtLedger(plan.workdir), order))
  return train_population(setups, population_dir=plan.population_dir(population.id),
                          label=label, built=built, actions=actions,
                          saved_hparams=list(pbt.hyperparameters) if pbt else ())
