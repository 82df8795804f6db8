"""A progress bar (tqdm, notebook-aware) updated once per jitted chunk."""

from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

log = logging.getLogger("gmf_jax")


class Progress:
  """Shows step, steps/s, loss and ETA; does nothing when disabled.

  For a population of `members`, the bar also shows how many members run and failed, and
  member-steps per second (steps/s times the members training together).
  """

  def __init__(self, total: int, enabled: bool = True, initial: int = 0, members: int = 1,
               label: str | None = None):
    self._members = members
    self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                     disable=not enabled, smoothing=0.1, desc=label)

  def update(self, steps: int, loss: float, failed: int = 0) -> None:
    if self._members > 1:
      rate = self._bar.format_dict.get("rate") or 0.0
      self._bar.set_postfix(running=self._members - failed, failed=failed,
                            member_steps_s=f"{rate * (self._members - failed):.0f}",
                            loss=f"{loss:.4g}", refresh=False)
    else:
      self._bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
    self._bar.update(steps)

  def set_members(self, members: int) -> None:
    """The population shrank to `members`."""
    self._members = members

  def message(self, text: str) -> None:
    """Prints a line above the bar (or as a log line when the bar is off)."""
    if self._bar.disable:
      log.info(text)
    else:
      self._bar.write(text, file=sys.stdout)

  def close(self) -> None:
    self._bar.close()


def console_logging() -> None:
  """Shows progress messages in a terminal or notebook, unless the user set up this logger.

  (Libraries such as absl add handlers to the root logger, so its state says nothing.)
  """
  if not log.handlers:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    if log.level == logging.NOTSET:
      log.setLevel(logging.INFO)
    log.propagate = False
