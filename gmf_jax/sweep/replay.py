"""Replaying a PBT member: one new run that follows the hyperparameters its final weights
trained with, from step 0, as piecewise-constant schedules.

    python -m gmf_jax.sweep --replay=runs/<sweep>/<member> [--workdir=DIR]

A member's weights at the end descend from the member it last copied, at the step it copied
them, and so on back to a member that never copied anyone (the root). The replay takes the
root's config and seed (so its initial weights are the root's) and, for every explored
hyperparameter, the values along that line of descent: the root's from step 0, then at each
copy the values the copying member went on with (`gmf_jax.train.piecewise`). The numbers are
not the member's own: after a copy the weights train on the copying member's data order and
dropout keys, and the replay keeps the root's throughout. What it reproduces is the schedule
PBT found, as one run that can be inspected, extended, diagnosed and compared.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from gmf_jax.errors import ConfigError
from gmf_jax.runlog.files import read_json
from gmf_jax.sweep import ledger


def lineage_timeline(name: str, events: list[dict[str, Any]], initial: dict[str, dict],
                     until: int) -> tuple[str, list[tuple[int, dict[str, float]]]]:
  """The line of descent of member `name`'s weights at step `until`: (root member, [(step,
  values from the step after it)]), the first entry at step 0.

  Args:
    events: the sweep's exploits (`sweep.json`'s `pbt.events`).
    initial: each member's first values of the explored hyperparameters.
  """
  mine = sorted((e for e in events if e["member"] == name and e["step"] < until),
                key=lambda e: e["step"])
  if not mine:
    return name, [(0, dict(initial[name]))]
  last = mine[-1]
  root, before = lineage_timeline(last["from"], events, initial, last["step"])
  return root, [*before, (last["step"], dict(last["after"]))]


def replay_config(member_dir: str):
  """The config of the replay of `member_dir` (a PBT sweep's member folder), and its root."""
  from gmf_jax.sweep import spec as spec_lib
  from gmf_jax.sweep.exploit import LINEAGE
  from gmf_jax.sweep.run import member_config

  member_dir = os.path.abspath(member_dir)
  workdir, name = os.path.dirname(member_dir), os.path.basename(member_dir)
  data = ledger.read(workdir)
  if data is None or "pbt" not in data.get("definition", {}):
    raise ConfigError(f"--replay={member_dir}: not a member of a PBT sweep (its folder's parent "
                      f"holds no sweep.json with 'pbt'); pass runs/<sweep>/<member>.")
  members = {m["name"]: m for m in data["members"]}
  if name not in members:
    raise ConfigError(f"--replay={member_dir}: the sweep has no member {name!r}; its members "
                      f"are folders of {workdir}.")
  initial = {}
  for n in members:
    path = os.path.join(workdir, n, LINEAGE)
    if os.path.exists(path):
      initial[n] = read_json(path)["initial"]
  if name not in initial:
    raise ConfigError(f"--replay={member_dir}: it has no {LINEAGE} yet (it never trained); run "
                      "the sweep first.")
  if data.get("file") is None:
    raise ConfigError(f"--replay={member_dir}: the sweep was made in Python, with no file to "
                      "rebuild its members from.")
  sweep = spec_lib.load_sweep(data["file"], data["definition"].get("overrides") or None)
  config = member_config(sweep, next(m for m in sweep.members if m.name == name))
  root, timeline = lineage_timeline(name, (data.get("pbt") or {}).get("events", []), initial,
                                    config.num_steps + 1)
  config = member_config(sweep, next(m for m in sweep.members if m.name == root))
  with config.unlocked():
    config.name = f"{sweep.name}-replay"
    config.wandb.group = f"{sweep.name}-replay"
    for key in timeline[0][1]:
      section, _, leaf = key.rpartition(".")
      node = config.piecewise
      for part in section.split(".") if section else []:
        if part not in node:
          node[part] = type(config)()
        node = node[part]
      node[leaf] = {"steps": [s for s, _ in timeline[1:]],
                    "values": [v[key] for _, v in timeline]}
  return config, root, timeline


def replay(member_dir: str, workdir: str | None = None):
  """Trains the replay of a PBT member (see the module's docstring); returns its
  `TrainResult`."""
  from gmf_jax.train.loop import train_and_evaluate
  from gmf_jax.train.progress import console_logging

  config, root, timeline = replay_config(member_dir)
  console_logging()
  logging.getLogger("gmf_jax").info(
      "replay of %s: the weights of %s, then %d copies (steps %s)", os.path.basename(member_dir),
      root, len(timeline) - 1, ", ".join(str(s) for s, _ in timeline[1:]) or "none")
  return train_and_evaluate(config, workdir)
