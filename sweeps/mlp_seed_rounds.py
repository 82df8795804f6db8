"""Seeds until the claim holds: three SGD step sizes of the MLP classifier, each trained on as
many seeds as its mean final eval/accuracy needs for a 95% interval of +-0.004.

    python -m gmf_jax.sweep --sweep=sweeps/mlp_seed_rounds.py
    python -m analyze.report runs/mlp_seed_rounds

Every point trains 3 seeds first; a point whose Student t interval of the mean is wider than
asked gets as many more seeds as it has, in a new round (3, 6, 12), at most 12. `sweep.json`'s
`seed_rounds` records each round and why each point stopped (see gmf_jax/sweep/seed_rounds.py).
"""


def get_sweep():
  return {
      "config": "configs/mlp.py",
      "parameters": {"lr": {"values": [0.01, 0.05, 0.2]}},
      "metric": {"name": "eval/accuracy", "goal": "maximize"},
      "seeds": {"min": 3, "max": 12, "until": {"ci_half_width": 0.004}},
  }
