"""The default job: an MLP VAE on the built-in 8x8 digits (offline), binarized pixels.

Variants (combine with commas, e.g. `configs/vae.py:conv,smoke`):
  smoke     a few steps, for tests and a quick look.
  conv      a convolutional VAE instead of the MLP one.
  gaussian  grey-level pixels with a Gaussian likelihood instead of binarized + Bernoulli.
"""

from gmf_jax.config import default_config


def get_config(arg=None):
  c = default_config()
  c.name = "vae"
  c.seed = 0
  c.num_steps = 10_000
  c.batch_size = 64
  c.steps_per_call = 500
  c.log_every_steps = 100
  c.eval_every_steps = 2_000

  c.data.name = "digits"
  c.data.binarize = True  # binary pixels make the Bernoulli NELBO a true bound, in nats

  c.model.name = "mlp_vae"
  c.model.latent_dim = 8
  c.model.hidden = (256, 128)
  c.model.activation = "relu"

  c.loss.name = "elbo"
  c.loss.beta = 1.0  # > 1 for a beta-VAE; eval/nelbo always uses beta = 1
  c.loss.likelihood = "bernoulli"
  c.loss.obs_sigma = 0.1  # only for the Gaussian likelihood

  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.schedule.name = "warmup_cosine"
  c.schedule.warmup_steps = 200
  c.schedule.end_value = 0.1  # the final learning rate, as a fraction of the peak

  # Looks inside the trained model at the end (cheap); see README for every diagnostic, and
  # `python -m gmf_jax.diagnose` to run more on the saved checkpoints afterwards.
  c.diagnostics.reconstructions = dict(schedule="end", num=16)
  c.diagnostics.samples = dict(schedule="end", num=16)
  c.diagnostics.latent_space = dict(schedule="end")
  # More, e.g.: c.diagnostics.jacobian = dict(every_steps=2000, of="decoder")

  for variant in filter(None, (arg or "").split(",")):
    if variant == "smoke":
      c.num_steps, c.steps_per_call, c.log_every_steps, c.eval_every_steps = 40, 10, 10, 20
      c.schedule.warmup_steps = 5
      c.progress_bar = False
      c.diagnostics = c.diagnostics.__class__()  # tests of diagnostics choose their own
    elif variant == "conv":
      c.name = "conv_vae"
      c.model = c.model.__class__({"name": "conv_vae", "latent_dim": 8, "features": (32, 64),
                                   "activation": "relu"})
    elif variant == "gaussian":
      c.data.binarize = False
      c.loss.likelihood = "gaussian"
    else:
      raise ValueError(f"unknown variant {variant!r}; choose from smoke, conv, gaussian")
  return c
