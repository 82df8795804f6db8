"""Resuming a run in its folder: is the config the same run, and trimming what came after
the checkpoint so that `metrics.csv` has no duplicated or missing steps."""

from __future__ import annotations

import os
from typing import Any

from gmf_jax.config import default_config, flatten, same_value
from gmf_jax.errors import ConfigError
from gmf_jax.runlog.summary import Summary
from gmf_jax.runlog.writers import complete_rows, write_rows

# Keys that may differ between the saved config and the resuming one: they do not change the
# result (num_steps may grow: the run is extended; steps_per_call is bitwise neutral; a data
# folder or cache path differs from machine to machine, e.g. for a requeued cluster job or a
# copied run folder).
RESUMABLE_KEYS = (
    "num_steps",
    "num_epochs",
    "steps_per_call",
    "progress_bar",
    "data.data_dir",
    "compile_cache.dir",
    "compile_cache.max_size_mb",
    "checkpoint.every_steps",
    "checkpoint.max_to_keep",
    "checkpoint.async_save",
    "wandb.mode",
    "wandb.init_timeout",
    # The devices a run is split over: a checkpoint restores on any layout, and a resumed run
    # differs from one never moved only in the order gradients are summed (~1e-7 relative).
    "mesh.data",
    "mesh.members",
    "mesh.model",
    # Where the processes and the data readers run: the same batches in the same order.
    "distributed.enabled",
    "distributed.coordinator_address",
    "distributed.num_processes",
    "distributed.process_id",
    "data.workers",
    "data.prefetch",
)


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """`key: saved -> now` for every key that differs and would change the run. A key the saved
  config lacks is no difference while it holds its default: a newer gmf_jax added it, and its
  default is what the saved run did (e.g. `ema.decay=None`)."""
  flat_saved, flat_now = flatten(saved), flatten(current)
  defaults = flatten(default_config())
  lines = []
  for key in sorted(set(flat_saved) | set(flat_now)):
    if key in RESUMABLE_KEYS:
      continue
    if key not in flat_saved and key in defaults and same_value(flat_now.get(key), defaults[key]):
      continue
    a, b = flat_saved.get(key, "<absent>"), flat_now.get(key, "<absent>")
    if not same_value(a, b):
      lines.append(f"{key}: {a!r} -> {b!r}")
  return lines


def check_same_run(saved: dict[str, Any], current: dict[str, Any], workdir: str) -> None:
  """Raises ConfigError with the differences when the config would change the saved run."""
  diff = config_differences(saved, current)
  if diff:
    raise ConfigError(
        f"--workdir={workdir} holds a run with a different config; resuming would mix two "
        f"runs. Differences (saved -> now): {'; '.join(diff)}. Use a new --workdir, or the "
        "saved config (config.json). Nothing was changed."
    )


def trim_metrics(path: str, last_step: int) -> list[dict[str, str]]:
  """Drops rows after `last_step` (and a torn last line) from metrics.csv, atomically.

  Returns:
    The rows kept.
  """
  if not os.path.exists(path):
    return []
  rows = kept_rows(path, last_step)
  write_rows(path, rows)
  return rows


def kept_rows(path: str, last_step: int) -> list[dict[str, str]]:
  """The complete rows of metrics.csv up to `last_step`, read only (what `trim_metrics`
  keeps)."""
  return [r for r in complete_rows(path) if int(r["step"]) <= last_step]


def summary_from_rows(summary: Summary, rows: list[dict[str, str]]) -> None:
  """Replays metric rows into a summary, so final/best values survive a restart."""
  for row in rows:
    summary.update(int(row["step"]), {row["name"]: float(row["value"])})

