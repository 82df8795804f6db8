"""Run folders into tables: one row per run (`load_runs`), every logged row (`load_metrics`),
and diagnostics' arrays (`load_diagnostics`).

Loading reads only the files a run writes (`config.json`, `metadata.json`, `summary.json`,
`metrics.csv`, `diagnostics/*/step_*.npz`, and a sweep's `sweep.json`); it never imports or
executes anything of a run's (its `config.py` copy is never read). Runs that are running,
failed, crashed or half-written load too, and say so in their `status` and `problems` columns.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from gmf_jax.runlog.liveness import liveness

log = logging.getLogger("gmf_jax")

RUN_FILES = ("metadata.json", "config.json")  # either marks a folder as a run
METRICS_HEADER = b"step,name,value,wall_time"
METRIC_COLUMNS = ["step", "name", "value", "wall_time"]
# Folders inside a run or a sweep that never hold runs: not searched.
NOT_RUNS = frozenset({"checkpoints", "populations", "wandb", "diagnostics", "plots", "__pycache__"})
MAX_DEPTH = 8

PathOrRuns = str | os.PathLike | Sequence[str | os.PathLike] | pd.DataFrame


def find_runs(path: str | os.PathLike) -> list[str]:
  """Every run folder at or below `path` (absolute paths, sorted).

  A run folder holds `metadata.json` or `config.json`; its own subfolders (checkpoints,
  diagnostics, wandb...) are not searched, nor are a sweep's `populations/`.

  Raises:
    FileNotFoundError: `path` is not a folder.
  """
  root = os.path.abspath(os.fspath(path))
  if not os.path.isdir(root):
    raise FileNotFoundError(f"{root} is not a folder; pass a run folder, a sweep folder or runs/")
  found: list[str] = []

  def walk(folder: str, depth: int) -> None:
    try:
      entries = list(os.scandir(folder))
    except OSError:
      return
    names = {e.name for e in entries}
    if any(name in names for name in RUN_FILES):
      found.append(folder)
      return
    if depth >= MAX_DEPTH:
      return
    for e in entries:
      if e.name in NOT_RUNS or e.name.startswith("."):
        continue
      try:
        if e.is_dir():
          walk(e.path, depth + 1)
      except OSError:
        continue

  walk(root, 0)
  return sorted(found)


def load_runs(path: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
  """One row per run folder found at or below `path` (a run, a sweep, or all of `runs/`).

  Columns:
    run: the run folder (absolute path); name: its path relative to the folder loaded.
    status: the effective status (`gmf_jax.runlog.effective_status`): `running`, `completed`,
      `failed`, `preempted`, or `crashed` for a run recorded as running whose process is gone;
      `unknown` without a readable metadata.json.
    seed, sweep (the sweep's name, or None), member (its member name), population, error (a
      failed run's message), start_time, end_time, last_step (the last step in summary.json).
    problems: what is missing or half-written ('' when nothing is), e.g. "no summary.json".
    config.<key>: every key of `config.json`, flattened with dots (lists become tuples).
    final.<metric>, best.<metric>: each metric's final and best value (summary.json; for a run
      without one, from its metrics.csv).

  Args:
    path: a folder, or several.

  Returns:
    A DataFrame sorted by `run`; `.attrs["root"]` is the folder loaded (the first, for many).
  """
  paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
  if not paths:
    raise ValueError("load_runs needs at least one folder")
  roots = [os.path.abspath(os.fspath(p)) for p in paths]
  folders = sorted({f for root in roots for f in find_runs(root)})
  sweeps = _SweepIndex()
  records = [_safe_record(folder, roots, sweeps) for folder in folders]
  frame = _frame(records)
  frame.attrs["root"] = roots[0]
  return frame


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
  base = ["run", "name", "status", "seed", "sweep", "member", "population", "error",
          "start_time", "end_time", "last_step", "problems"]
  if not records:
    return pd.DataFrame(columns=base)
  frame = pd.DataFrame.from_records(records)
  # Fixed columns first, then config, final and best, each sorted.
  rest = sorted(c for c in frame.columns if c not in base)
  ordered = base + [c for c in rest if c.startswith("config.")] + [
      c for c in rest if c.startswith("final.")] + [c for c in rest if c.startswith("best.")]
  frame = frame.reindex(columns=ordered + [c for c in rest if c not in ordered])
  frame["seed"] = frame["seed"].astype("Int64")
  frame["last_step"] = frame["last_step"].astype("Int64")
  return frame


class _SweepIndex:
  """`sweep.json` of each folder, read once: member folder name -> (sweep, member, population)."""

  def __init__(self):
    self._by_dir: dict[str, dict[str, tuple]] = {}

  def member(self, run: str) -> tuple[str | None, str | None, str | None]:
    parent, folder = os.path.split(run)
    if parent not in self._by_dir:
      self._by_dir[parent] = self._read(parent)
    return self._by_dir[parent].get(folder, (None, None, None))

  @staticmethod
  def _read(folder: str) -> dict[str, tuple]:
    data = _read_json(os.path.join(folder, "sweep.json"))
    if not isinstance(data, dict):
      return {}
    definition = data.get("definition")
    name = (definition.get("name") if isinstance(definition, dict) else None) or (
        os.path.basename(folder))
    out = {}
    for m in data.get("members") or []:
      if isinstance(m, dict) and m.get("folder"):
        out[m["folder"]] = (name, m.get("name"), m.get("population"))
    return out


def _read_json(path: str) -> Any:
  try:
    with open(path, "rb") as f:
      return json.loads(f.read())
  except (OSError, ValueError):
    return None


def _safe_record(folder: str, roots: list[str], sweeps: _SweepIndex) -> dict[str, Any]:
  """A run's row; a file of the wrong shape marks this run, never stops the whole load."""
  try:
    return _run_record(folder, roots, sweeps)
  except Exception as e:  # noqa: BLE001 - hand-edited or foreign JSON of any shape
    return {"run": folder, "name": os.path.relpath(folder, roots[0]), "status": "unknown",
            "problems": f"unreadable record ({type(e).__name__}: {e})"}


def _run_record(folder: str, roots: list[str], sweeps: _SweepIndex) -> dict[str, Any]:
  problems = []
  root = next((r for r in roots if folder == r or folder.startswith(r + os.sep)), roots[0])
  record: dict[str, Any] = {"run": folder, "name": os.path.relpath(folder, root)}
  metadata = _read_json(os.path.join(folder, "metadata.json"))
  if isinstance(metadata, dict):
    record["status"] = liveness(metadata)[0]
  else:
    metadata = {}
    record["status"] = "unknown"
    problems.append("metadata.json missing or unreadable")
  config = _read_json(os.path.join(folder, "config.json"))
  if not isinstance(config, dict):
    config = {}
    problems.append("config.json missing or unreadable")
  seed = metadata.get("seed", config.get("seed"))
  record["seed"] = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
  record["sweep"], record["member"], record["population"] = sweeps.member(folder)
  record["error"] = metadata.get("error")
  record["start_time"] = metadata.get("start_time")
  record["end_time"] = metadata.get("end_time")
  _flatten(config, "config.", record)

  summary = _read_json(os.path.join(folder, "summary.json"))
  metrics = summary.get("metrics") if isinstance(summary, dict) else None
  if not isinstance(metrics, dict):
    exists = summary is not None or os.path.exists(os.path.join(folder, "summary.json"))
    problems.append("summary.json unreadable" if exists else "no summary.json")
    metrics, problem = _summary_from_csv(os.path.join(folder, "metrics.csv"))
    if problem:
      problems.append(problem)
  last = None
  for name, entry in metrics.items():
    if not isinstance(entry, dict):
      continue
    record[f"final.{name}"] = _number(entry.get("final"))
    record[f"best.{name}"] = _number(entry.get("best"))
    step = entry.get("final_step")
    if isinstance(step, int) and (last is None or step > last):
      last = step
  record["last_step"] = last
  record["problems"] = "; ".join(problems)
  return record


def _number(value: Any) -> float:
  return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (
      math.nan)


def _flatten(tree: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
  for key, value in tree.items():
    kind = type(value)  # JSON gives exact types: cheaper than isinstance on 10k runs
    if kind is dict:
      if value:
        _flatten(value, f"{prefix}{key}.", out)
      else:
        out[prefix + key] = None
    elif kind is list:
      out[prefix + key] = _hashable(value)
    else:
      out[prefix + key] = value


def _hashable(value: Any) -> Any:
  if isinstance(value, list):
    return tuple(_hashable(v) for v in value)
  if isinstance(value, dict):  # inside a list: rare; kept readable and hashable
    return json.dumps(value, sort_keys=True)
  return value


def _summary_from_csv(path: str) -> tuple[dict[str, dict[str, Any]], str | None]:
  """Final and best values from metrics.csv, for a run whose summary.json is missing."""
  from gmf_jax.runlog.summary import higher_is_better

  rows, problem = _read_metrics_file(path)
  if rows is None:
    return {}, problem
  malformed: dict[str, str] = {}
  table = _parse([rows], [path], malformed) if rows else None
  if malformed:
    problem = "; ".join(filter(None, [problem, malformed[path]]))
  out: dict[str, dict[str, Any]] = {}
  if table is None or table.empty:
    return out, problem
  for name, group in table.groupby("name", observed=True, sort=False):
    values = group["value"].to_numpy()
    steps = group["step"].to_numpy()
    finite = np.isfinite(values)
    entry = {"final": float(values[-1]), "final_step": int(steps[-1])}
    if finite.any():
      pick = np.argmax if higher_is_better(str(name)) else np.argmin
      i = np.flatnonzero(finite)[pick(values[finite])]
      entry["best"], entry["best_step"] = float(values[i]), int(steps[i])
    out[str(name)] = entry
  return out, problem


def _read_metrics_file(path: str) -> tuple[bytes | None, str | None]:
  """The data rows of a metrics.csv (header checked, a half-written last line dropped)."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError:
    return None, "no metrics.csv"
  header, sep, rows = data.partition(b"\n")
  if header.strip() != METRICS_HEADER:
    if not data:
      return b"", None
    return None, f"metrics.csv has an unknown header {header[:60]!r}"
  problem = None
  if rows and not rows.endswith(b"\n"):
    rows = rows[:rows.rfind(b"\n") + 1]  # the writer was cut mid-line
    problem = "metrics.csv: a half-written last line was dropped"
  return rows, problem


DTYPES = {"step": np.int64, "name": "category", "value": np.float64, "wall_time": np.float64}


def _parse(chunks: list[bytes], runs: list[str], problems: dict[str, str]) -> pd.DataFrame:
  """The rows of every run's metrics.csv, parsed as one buffer (one C-parser call).

  Where that fails (a line the writer never wrote: a crash's NUL block, a torn or blank line),
  each run is parsed on its own, its bad lines dropped and named in `problems`.
  """
  counts = np.fromiter((c.count(b"\n") for c in chunks), dtype=np.int64, count=len(chunks))
  try:
    table = pd.read_csv(io.BytesIO(b"".join(chunks)), header=None, names=METRIC_COLUMNS,
                        dtype=DTYPES, engine="c", skip_blank_lines=False)
    whole = len(table) == counts.sum() and not table["wall_time"].isna().any()
  except (ValueError, pd.errors.ParserError):
    whole = False
  if not whole:
    parts = [_parse_lenient(chunk, run, problems) for chunk, run in zip(chunks, runs,
                                                                         strict=True)]
    counts = np.asarray([len(p) for p in parts], np.int64)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=METRIC_COLUMNS)
    table = table.astype(DTYPES)
  codes = np.repeat(np.arange(len(runs), dtype=np.int32), counts)
  table.insert(0, "run", pd.Categorical.from_codes(codes, categories=pd.Index(runs)))
  return table


def _parse_lenient(chunk: bytes, run: str, problems: dict[str, str]) -> pd.DataFrame:
  """One run's rows, keeping the lines the writer could have written: an integer step, a name,
  a number or `nan` (a diverged member's value, kept as NaN) and a wall time."""
  text = pd.read_csv(io.BytesIO(chunk.replace(b"\x00", b"")), header=None,
                     names=METRIC_COLUMNS, dtype=str, engine="python", on_bad_lines="skip",
                     skip_blank_lines=True, keep_default_na=False)
  step = pd.to_numeric(text["step"], errors="coerce")
  value = pd.to_numeric(text["value"], errors="coerce")
  wall = pd.to_numeric(text["wall_time"], errors="coerce")
  nan = text["value"].fillna("").str.strip().str.lower() == "nan"
  good = (step.notna() & (step == step.round()) & wall.notna()
          & (text["name"].fillna("") != "") & (value.notna() | nan))
  bad = chunk.count(b"\n") - int(good.sum())
  if bad:
    note = f"metrics.csv: {bad} malformed line(s) dropped"
    problems[run] = f"{problems[run]}; {note}" if run in problems else note
  return pd.DataFrame({"step": step[good].astype(np.int64), "name": text["name"][good],
                       "value": value[good], "wall_time": wall[good]})


def _run_folders(path_or_runs: PathOrRuns) -> list[str]:
  if isinstance(path_or_runs, pd.DataFrame):
    if "run" not in path_or_runs.columns:
      raise ValueError("a runs table needs a 'run' column (load it with load_runs)")
    return list(dict.fromkeys(path_or_runs["run"]))
  if isinstance(path_or_runs, (str, os.PathLike)):
    return find_runs(path_or_runs)
  return list(dict.fromkeys(f for p in path_or_runs for f in find_runs(p)))


def load_metrics(path_or_runs: PathOrRuns, names: str | Sequence[str] | None = None
                 ) -> pd.DataFrame:
  """Every row of every run's `metrics.csv`.

  Args:
    path_or_runs: a folder (run, sweep or `runs/`), several, or a table from `load_runs` (its
      `run` column says which runs to read).
    names: keep only these metrics (e.g. "eval/loss"), or all with None.

  Returns:
    Columns `run` (categorical, the run folder), `step`, `name` (categorical), `value`,
    `wall_time`, in the order written. A half-written last line (a run cut mid-write) is
    dropped; `.attrs["problems"]` maps such runs to what was wrong. Diagnostics' arrays are
    loaded by `load_diagnostics`; their scalars are rows here (`diag/<name>/<key>`).
  """
  folders = _run_folders(path_or_runs)
  chunks, runs, problems = [], [], {}
  for folder in folders:
    rows, problem = _read_metrics_file(os.path.join(folder, "metrics.csv"))
    if problem and problem != "no metrics.csv":
      problems[folder] = problem
    if rows:
      chunks.append(rows)
      runs.append(folder)
  if chunks:
    table = _parse(chunks, runs, problems)
    table["run"] = table["run"].cat.set_categories(folders)  # runs without rows keep a category
  else:
    table = pd.DataFrame({"run": pd.Categorical([], categories=folders),
                          "step": np.zeros(0, np.int64), "name": pd.Categorical([]),
                          "value": np.zeros(0), "wall_time": np.zeros(0)})
  if names is not None:
    wanted = [names] if isinstance(names, str) else list(names)
    table = table[table["name"].isin(wanted)].reset_index(drop=True)
    table["name"] = table["name"].cat.remove_unused_categories()
  for folder, problem in problems.items():
    log.warning("%s: %s", folder, problem)
  table.attrs["problems"] = problems
  return table


def load_diagnostics(path_or_runs: PathOrRuns, name: str, keys: Sequence[str] | None = None,
                     steps: Sequence[int] | None = None) -> pd.DataFrame:
  """The arrays a diagnostic saved (`diagnostics/<name>/step_<N>.npz`) in each run.

  Args:
    path_or_runs: as for `load_metrics`.
    name: the diagnostic (e.g. "weight_stats", "jacobian").
    keys: the arrays to keep (all with None).
    steps: the steps to keep (all with None).

  Returns:
    Columns `run, step, key, value`; `value` holds the numpy array.
  """
  wanted_steps = None if steps is None else {int(s) for s in steps}
  rows = []
  for folder in _run_folders(path_or_runs):
    directory = os.path.join(folder, "diagnostics", name)
    try:
      files = os.listdir(directory)
    except OSError:
      continue
    for file in files:
      stem, ext = os.path.splitext(file)
      if ext != ".npz" or not stem.startswith("step_") or not stem[5:].isdigit():
        continue
      step = int(stem[5:])
      if wanted_steps is not None and step not in wanted_steps:
        continue
      with np.load(os.path.join(directory, file), allow_pickle=False) as arrays:
        for key in arrays.files:
          if keys is None or key in keys:
            rows.append((folder, step, key, arrays[key]))
  rows.sort(key=lambda r: (r[0], r[1], r[2]))
  return pd.DataFrame(rows, columns=["run", "step", "key", "value"])
