"""The periodic checkpoint: a periodic action, also due when a stop signal comes."""

from __future__ import annotations

from gmf_jax.train.actions import PeriodicAction, Schedule, Tick


def make_checkpoint(context) -> PeriodicAction:
  """Saves the population's state every `checkpoint.every_steps` steps (0: only at the end),
  at the last step, and when a stop signal comes (the checkpoint a resume starts from). Saved
  once the next chunk is queued, and in the background, so training goes on while it is
  written."""
  config = context.exp.config

  def run(tick: Tick) -> None:
    context.save(tick.step, tick.state, tick=tick)  # a no-op where this step is saved already

  schedule = Schedule.make(context.exp.num_steps, every=config.checkpoint.every_steps or None)
  return PeriodicAction("checkpoint", schedule, run, on_signal=True)
