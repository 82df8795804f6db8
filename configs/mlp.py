"""An MLP classifier on the built-in 8x8 digits (offline). Variants: smoke, moons (2-D data),
across (the diagnostics across members at the end: for an ensemble, --config.num_seeds=4)."""

from gmf_jax.config import default_config


def get_config(arg=None):
  c = default_config()
  c.name = "mlp"
  c.num_steps = 5_000
  c.batch_size = 64
  c.steps_per_call = 500
  c.log_every_steps = 100
  c.eval_every_steps = 1_000

  c.data.name = "digits"
  c.model.name = "mlp_classifier"
  c.model.hidden = (64,)
  c.model.activation = "relu"
  c.model.dropout_rate = 0.0

  c.loss.name = "cross_entropy"
  c.loss.label_smoothing = 0.0

  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.05
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = True
  c.optimizer.weight_decay = 1e-4  # L2 on the weight matrices
  c.schedule.name = "cosine"

  c.diagnostics.confusion_matrix = dict(schedule="end")
  c.diagnostics.weight_stats = dict(every_steps=1000)  # how fast each layer moves

  for variant in filter(None, (arg or "").split(",")):
    if variant == "smoke":
      c.num_steps, c.steps_per_call, c.log_every_steps, c.eval_every_steps = 40, 10, 10, 20
      c.progress_bar = False
      c.diagnostics = c.diagnostics.__class__()
    elif variant == "across":
      for name in ("cka", "mode_connectivity", "ensemble"):
        c.diagnostics[name] = dict(schedule="end")
    elif variant == "moons":
      c.name = "mlp_moons"
      c.data = c.data.__class__({**c.data.to_dict(), "name": "moons", "noise": 0.1})
    else:
      raise ValueError(f"unknown variant {variant!r}; choose from smoke, moons, across")
  return c
