"""16 seeds of the MLP classifier as configs/mlp.py sets it: how much runs vary by seed alone.

    python -m gmf_jax.sweep --sweep=sweeps/mlp_seeds.py

The seeds run from the config's seed upwards (0..15 unless --config.seed=K moves the base).
"""


def get_sweep():
  return {
      "config": "configs/mlp.py",
      "seeds": 16,
  }
