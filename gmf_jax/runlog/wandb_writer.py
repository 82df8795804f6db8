"""Weights & Biases: offline by default, online only when asked; never stops training."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("gmf_jax")

MODES = ("offline", "online", "disabled")


def wandb_mode(configured: str) -> str:
  """WANDB_MODE, when set, wins over the config (so a cluster script can turn wandb off)."""
  return os.environ.get("WANDB_MODE") or configured


class WandbWriter:
  """Logs metrics and images to a wandb run kept in `<workdir>/wandb/`."""

  def __init__(self, run):
    self.run = run

  @classmethod
  def open(cls, wandb_config: Mapping[str, Any], workdir: str, config: dict[str, Any],
           run_id: str | None) -> WandbWriter | None:
    """Starts (or, with `run_id`, resumes) the wandb run; None when wandb is disabled.

    If the server cannot be reached in online mode, warns once and goes on offline.
    """
    mode = wandb_mode(wandb_config["mode"])
    if mode == "disabled":
      return None
    import wandb  # slow import; only when wandb is on

    kwargs = dict(
        project=wandb_config["project"], entity=wandb_config["entity"],
        group=wandb_config["group"], tags=list(wandb_config["tags"]) or None,
        name=wandb_config["name"] or os.path.basename(workdir), notes=wandb_config["notes"],
        config=config, dir=workdir, id=run_id, resume="allow" if run_id else None,
    )
    settings = wandb.Settings(
        init_timeout=float(wandb_config["init_timeout"]), console="off", silent=True,
        x_disable_stats=True, save_code=False,
    )
    try:
      run = wandb.init(mode=mode, settings=settings, **kwargs)
    except Exception as e:  # noqa: BLE001 - wandb must never stop a run
      if mode != "online":
        raise
      log.warning("warning: wandb cannot reach its server (%s: %s); logging offline to %s "
                  "instead (`wandb sync` uploads it later).", type(e).__name__,
                  str(e).splitlines()[0][:200] if str(e) else "", os.path.join(workdir, "wandb"))
      run = wandb.init(mode="offline", settings=settings, **kwargs)
    return cls(run)

  @property
  def run_id(self) -> str:
    return self.run.id

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    self.run.log(dict(scalars), step=int(step))

  def write_images(self, step: int, paths: Mapping[str, str]) -> None:
    import wandb

    self.run.log({k: wandb.Image(p) for k, p in paths.items()}, step=int(step))

  def close(self, exit_code: int = 0) -> None:
    import wandb

    self.run.finish(exit_code=exit_code)
    wandb.teardown()  # waits until the run's files are complete
