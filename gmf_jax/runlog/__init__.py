"""The run directory: where a run's config, metrics and summary are written."""

from gmf_jax.runlog.summary import Summary
from gmf_jax.runlog.workdir import new_run_dir, prepare_workdir
from gmf_jax.runlog.writers import CsvWriter

__all__ = ["CsvWriter", "Summary", "new_run_dir", "prepare_workdir"]
