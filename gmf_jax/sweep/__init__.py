"""Sweeps: sweep files, populations, executors.

    from gmf_jax.sweep import load_sweep, run_sweep, seed_ensemble
    run_sweep("sweeps/vae_lr_beta.py", executor="vmap")

See `gmf_jax.sweep.spec` (the sweep-file vocabulary), `gmf_jax.sweep.run` (the folder,
grouping, resume) and `gmf_jax.sweep.executors` (vmap, local, submitit).
"""

from gmf_jax.sweep.run import SweepResult, plan_sweep, run_sweep
from gmf_jax.sweep.spec import Member, Sweep, load_sweep, make_sweep, member_config, seed_ensemble

__all__ = ["Member", "Sweep", "SweepResult", "load_sweep", "make_sweep", "member_config",
           "plan_sweep", "run_sweep", "seed_ensemble"]
