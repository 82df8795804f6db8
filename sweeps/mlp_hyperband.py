"""Hyperband (successive halving, eta 3) over a 27-point random search of the MLP classifier's
SGD step and momentum.

    python -m gmf_jax.sweep --sweep=sweeps/mlp_hyperband.py

All 27 members train together to step 1000 (configs/mlp.py trains 5000 steps and evaluates
every 1000), where the best 9 by eval/loss go on and the others end with status `stopped`; at
step 3000 the best 3 go on to the end: 38% of the member-steps of training all 27 fully. The
population shrinks at each rung (a gather on the member axis), so a stopped member costs nothing
after it. With `--config.num_steps=13500 --config.eval_every_steps=500` and `min_iter` 500
the rungs are 500, 1500 and 4500, and one member trains to the end (an eleventh of the steps).
"""


def get_sweep():
  return {
      "config": "configs/mlp.py",
      "method": "random",
      "count": 27,
      "seed": 0,  # the sampler's seed: the same 27 points every time
      "parameters": {
          "optimizer.learning_rate": {"distribution": "log_uniform_values",
                                      "min": 0.003, "max": 1.0},
          "optimizer.momentum": {"distribution": "uniform", "min": 0.5, "max": 0.99},
      },
      "metric": {"name": "eval/loss", "goal": "minimize"},
      "early_terminate": {"type": "hyperband", "min_iter": 1000, "eta": 3},
  }
