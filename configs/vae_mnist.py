"""An MLP VAE on MNIST through tfds (needs the dataset prepared once, with network access:
`pip install tensorflow && tfds build mnist --file_format=array_record`). Variant: smoke.

Set `--config.data.data_dir=DIR` when the dataset is not in tfds' default folder.
"""

from ml_collections import config_dict

from gmf_jax.config import default_config


def get_config(arg=None):
  c = default_config()
  c.name = "vae_mnist"
  c.num_steps = 20_000
  c.batch_size = 128
  c.steps_per_call = 500
  c.log_every_steps = 100
  c.eval_every_steps = 5_000

  c.data.name = "tfds:mnist"
  c.data.data_dir = config_dict.placeholder(str)  # None: tfds' default (~/tensorflow_datasets)
  c.data.binarize = True

  c.model.name = "mlp_vae"
  c.model.latent_dim = 16
  c.model.hidden = (512, 256)

  c.loss.name = "elbo"
  c.loss.beta = 1.0
  c.loss.likelihood = "bernoulli"

  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.schedule.name = "warmup_cosine"
  c.schedule.warmup_steps = 500
  c.schedule.end_value = 0.1

  for variant in filter(None, (arg or "").split(",")):
    if variant == "smoke":
      c.num_steps, c.steps_per_call, c.log_every_steps, c.eval_every_steps = 20, 10, 10, 10
      c.schedule.warmup_steps = 5
      c.batch_size = 16
      c.progress_bar = False
    else:
      raise ValueError(f"unknown variant {variant!r}; choose from smoke")
  return c
