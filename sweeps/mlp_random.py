"""A random search over the MLP classifier's SGD step and L2 weight decay (16 runs).

    python -m gmf_jax.sweep --sweep=sweeps/mlp_random.py

configs/mlp.py uses SGD with Nesterov momentum 0.9 at 0.05 and weight decay 1e-4; both are drawn
log-uniformly over a range around those values, so every order of magnitude gets as many draws.
"""


def get_sweep():
  return {
      "config": "configs/mlp.py",
      "method": "random",
      "count": 16,
      "seed": 0,  # the sampler's seed: the same 16 points every time
      "parameters": {
          "optimizer.learning_rate": {"distribution": "log_uniform_values",
                                      "min": 1e-3, "max": 0.3},
          "optimizer.weight_decay": {"distribution": "log_uniform_values",
                                     "min": 1e-6, "max": 1e-3},
      },
  }
