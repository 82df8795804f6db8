"""The MLP VAE's learning rate against its KL weight: 2 x 3 points, 3 seeds each (18 runs).

    python -m gmf_jax.sweep --sweep=sweeps/vae_lr_beta.py

configs/vae.py trains with Adam at 1e-3; 3e-4 is the usual safer step. beta < 1 favours
reconstructions, beta > 1 a smoother latent space (eval/nelbo always uses beta = 1, so the runs
compare on one scale).
"""


def get_sweep():
  return {
      "config": "configs/vae.py",
      "method": "grid",
      "parameters": {
          "optimizer.learning_rate": {"values": [1e-3, 3e-4]},
          "loss.beta": {"values": [0.5, 1.0, 2.0]},
      },
      "seeds": 3,
  }
