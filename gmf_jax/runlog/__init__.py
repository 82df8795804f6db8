"""The run folder: config, metadata, metrics, summary, checkpoints, plots and wandb."""

from gmf_jax.runlog.liveness import effective_status
from gmf_jax.runlog.record import RunFolder, open_run_folder
from gmf_jax.runlog.summary import Summary
from gmf_jax.runlog.workdir import new_run_dir
from gmf_jax.runlog.writers import CsvWriter, MultiWriter

__all__ = ["CsvWriter", "MultiWriter", "RunFolder", "Summary", "effective_status", "new_run_dir",
           "open_run_folder"]
