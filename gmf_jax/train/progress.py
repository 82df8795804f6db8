"""A progress bar (tqdm, notebook-aware) updated once per jitted chunk."""

from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

log = logging.getLogger("gmf_jax")


class Progress:
  """Shows step, steps/s, loss and ETA; does nothing when disabled."""

  def __init__(self, total: int, enabled: bool = True, initial: int = 0):
    self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                     disable=not enabled, smoothing=0.1)

  def update(self, steps: int, loss: float) -> None:
    self._bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
    self._bar.update(steps)

  def message(self, text: str) -> None:
    """Prints a line above the bar (or as a log line when the bar is off)."""
    if self._bar.disable:
      log.info(text)
    else:
      self._bar.write(text, file=sys.stdout)

  def close(self) -> None:
    self._bar.close()
