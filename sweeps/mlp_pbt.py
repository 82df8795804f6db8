"""Population-based training of the MLP classifier: 16 members, learning rates over two decades.

    python -m gmf_jax.sweep --sweep=sweeps/mlp_pbt.py
    python -m gmf_jax.sweep --replay=runs/mlp_pbt/<member>   # the best member's history, alone

The 16 members start from learning rates spaced evenly in log scale from 0.003 to 0.3 (a
constant schedule, so the rate PBT picks is the rate used). Every 1000 steps (at each
evaluation) the worst 4 by eval/loss copy the weights and optimizer state of one of the best 4
and go on with its learning rate times 0.8 or 1.2 (or, one time in four, a rate drawn anew).
Each member's lineage.json lists its copies; sweep.json holds the family tree, and
`python -m analyze.report runs/mlp_pbt` draws it.
"""


def get_sweep():
  rates = [round(0.003 * 100 ** (i / 15), 6) for i in range(16)]
  return {
      "config": "configs/mlp.py",
      "method": "grid",
      "parameters": {
          "optimizer.learning_rate": {"values": rates},
          "schedule.name": {"value": "constant"},
      },
      "metric": {"name": "eval/loss", "goal": "minimize"},
      "pbt": {
          "interval": 1000,
          "quantile": 0.25,
          "perturb": [0.8, 1.2],
          "resample_probability": 0.25,
          "hyperparameters": {
              "optimizer.learning_rate": {"distribution": "log_uniform_values",
                                          "min": 0.001, "max": 1.0},
          },
      },
  }
