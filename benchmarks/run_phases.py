"""Comparing two kinds of runs phase by phase, so that a noisy machine does not decide.

On this VM other tenants slow random stretches of about a second by 10-25%. A run's total wall
time takes every such burst in, so the difference of two 10 s runs swings by +-10%. Cut into
phases instead, each from the run's own record:

  head   from the call to `train_and_evaluate` to the first jitted call's metrics (building,
         the run folder, compilation, the first call);
  calls  each later jitted call, from one call's metrics to the next (metrics.csv's wall_time
         of the train/loss row at the call's last step; the host work between calls included);
  tail   from the last call's metrics to the return (final evaluation, checkpoint, outputs).

The median of each phase over repeated runs ignores the bursts (a burst hits one call in one
or two runs, not the same call in most), and the sum of the per-phase differences of the
medians is the extra time of one kind of run over the other.
"""

from __future__ import annotations

import csv
import dataclasses

import numpy as np


def call_ends(metrics_csv: str, steps_per_call: int) -> list[float]:
  """The wall_time of the train/loss row at the last step of each jitted call: written as soon
  as the call's metrics reach the host. Needs log_every_steps to divide steps_per_call."""
  with open(metrics_csv, newline="") as f:
    return [float(row["wall_time"]) for row in csv.DictReader(f)
            if row["name"] == "train/loss" and int(row["step"]) % steps_per_call == 0]


def run_phases(metrics_csv: str, steps_per_call: int, start: float, end: float) -> np.ndarray:
  """[head, call 2, ..., call N, tail] in seconds; `start`, `end`: `time.time()` around the
  call."""
  marks = call_ends(metrics_csv, steps_per_call)
  return np.array([marks[0] - start, *np.diff(marks), end - marks[-1]])


@dataclasses.dataclass
class Comparison:
  """Seconds that runs of kind B take beyond runs of kind A, by phase (medians over runs)."""

  head: float
  calls: float
  tail: float
  base: float  # the sum of A's median phases: a typical A run
  per_call: np.ndarray  # each later call's difference of medians

  @property
  def total(self) -> float:
    return self.head + self.calls + self.tail

  @property
  def upper(self) -> float:
    """The total with each of head, calls and tail counted as at least zero: a phase that came
    out faster is taken as noise, not as a saving."""
    return max(0.0, self.head) + max(0.0, self.calls) + max(0.0, self.tail)


def compare(a: list[np.ndarray], b: list[np.ndarray]) -> Comparison:
  """`a`, `b`: run_phases of each run of the two kinds (all with the same phases)."""
  med_a, med_b = np.median(np.stack(a), axis=0), np.median(np.stack(b), axis=0)
  diff = med_b - med_a
  return Comparison(head=float(diff[0]), calls=float(diff[1:-1].sum()), tail=float(diff[-1]),
                    base=float(med_a.sum()), per_call=diff[1:-1])
