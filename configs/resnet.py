"""A ResNet-8 with BatchNorm on the built-in 8x8 digits (offline), with the trainer's parts on:
augmentation inside the step, gradient accumulation and averaged weights evaluated beside the
live ones. Variants: smoke (30 steps), bf16 (the model computes in bfloat16), cifar10 (32x32x3
images from a prepared tfds:cifar10)."""

from gmf_jax.config import default_config


def get_config(arg=None):
  c = default_config()
  c.name = "resnet"
  c.num_steps = 2_000
  c.batch_size = 128
  c.steps_per_call = 100
  c.log_every_steps = 100
  c.eval_every_steps = 500

  c.data.name = "digits"
  c.data.augment.crop_padding = 1
  c.data.augment.noise_std = 0.02

  c.model.name = "resnet"
  c.model.depth = 8
  c.model.width = 16
  c.model.norm = "batch"

  c.loss.name = "cross_entropy"
  c.optimizer.name = "sgd"
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = True
  c.optimizer.weight_decay = 5e-4
  c.optimizer.accumulate_steps = 2  # two micro-batches of 64 per step
  c.schedule.name = "warmup_cosine"
  c.schedule.warmup_steps = 100

  c.ema.decay = 0.99
  c.ema.evaluate = "both"
  c.checkpoint.best_metric = "eval/ema/accuracy"

  c.diagnostics.confusion_matrix = dict(schedule="end", weights="ema")

  for variant in filter(None, (arg or "").split(",")):
    if variant == "smoke":
      c.num_steps, c.steps_per_call, c.log_every_steps, c.eval_every_steps = 30, 10, 10, 15
      c.schedule.warmup_steps = 5
      c.progress_bar = False
      c.diagnostics = c.diagnostics.__class__()
      c.ema.decay = 0.8  # 30 steps: a shorter memory
    elif variant == "bf16":
      c.precision.compute = "bfloat16"
    elif variant == "cifar10":
      c.data.name = "tfds:cifar10"
      c.data.augment.flip = True
      c.data.augment.crop_padding = 4
      c.model.depth = 20
      c.num_steps = 20_000
    else:
      raise ValueError(f"unknown variant {variant!r}; choose from smoke, bf16, cifar10")
  return c
