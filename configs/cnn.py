"""A CNN classifier on the built-in 8x8 digits (offline). Variant: smoke."""

from gmf_jax.config import default_config


def get_config(arg=None):
  c = default_config()
  c.name = "cnn"
  c.num_steps = 2_000
  c.batch_size = 64
  c.steps_per_call = 200
  c.log_every_steps = 100
  c.eval_every_steps = 500

  c.data.name = "digits"
  c.model.name = "cnn_classifier"
  c.model.features = (32, 64)
  c.model.dense = 128
  c.model.dropout_rate = 0.1

  c.loss.name = "cross_entropy"
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 2e-3
  c.optimizer.weight_decay = 1e-4
  c.optimizer.grad_clip_norm = 1.0
  c.schedule.name = "warmup_cosine"
  c.schedule.warmup_steps = 100

  c.diagnostics.confusion_matrix = dict(schedule="end")

  for variant in filter(None, (arg or "").split(",")):
    if variant == "smoke":
      c.num_steps, c.steps_per_call, c.log_every_steps, c.eval_every_steps = 30, 10, 10, 15
      c.schedule.warmup_steps = 5
      c.progress_bar = False
      c.diagnostics = c.diagnostics.__class__()
    else:
      raise ValueError(f"unknown variant {variant!r}; choose from smoke")
  return c
