"""Config -> objects, once, at the edge. Every check on user input happens here, before the
run directory exists and before any compute.

Each component checks its own options where it is defined (optimizers in optim.py, losses in
losses.py, models in their modules, diagnostics in their factories); this module checks the
keys that belong to the run itself (steps, sizes, checkpoints, wandb, data placement).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gmf_jax import distributed, job
from gmf_jax.checks import check_choice, check_int, check_number
from gmf_jax.config import config_origin, default_config, flatten, setting
from gmf_jax.data import Dataset, make_dataset, stream
from gmf_jax.errors import ConfigError
from gmf_jax.members import with_member_axis
from gmf_jax.models import make_model
from gmf_jax.models.variables import bound_apply, split_variables
from gmf_jax.registry import ComponentOptions
from gmf_jax.train import hparams as hparams_lib
from gmf_jax.train import piecewise as piecewise_lib
from gmf_jax.train import precision
from gmf_jax.train.augment import NOISE_KEY, make_augment
from gmf_jax.train.ema import ema_init
from gmf_jax.train.losses import loss_values, make_loss, with_values
from gmf_jax.train.mesh import make_layout
from gmf_jax.train.optim import Optimizer, Schedule, make_schedule, prepare_optimizer
from gmf_jax.train.step import EMA_DECAY, RunKeys, StepOptions, TrainState, member_axes

POSITIVE_INTS = ("batch_size", "eval_batch_size", "steps_per_call", "log_every_steps",
                 "eval_every_steps")
MAX_STEPS = 2**31 - 1  # the step counter is an int32
# Characters wandb refuses in a project name (it would fail when the run starts).
_WANDB_PROJECT_FORBIDDEN = "/\\#?%:"


@dataclasses.dataclass(frozen=True)
class Experiment:
  """Everything a run needs, resolved from the config."""

  config: ml_collections.ConfigDict  # resolved: options of switched-away components left out
  dataset: Dataset
  model: nn.Module
  loss: Any  # see gmf_jax.train.losses
  tx: optax.GradientTransformation  # built from the concrete values (init, diagnostics)
  schedule: Schedule
  num_steps: int
  steps_per_epoch: int
  on_device: bool  # the train split is kept on the device and batched in the jitted chunk
  eval_metrics: tuple[str, ...]  # names written as eval/<name>
  optimizer: Optimizer | None = None
  hparams: dict[str, Any] = dataclasses.field(default_factory=dict)  # data values by key
  dropped: tuple[str, ...] = ()  # keys left out of the resolved config (see ComponentOptions)
  diagnostics: tuple = ()  # gmf_jax.diagnostics.ScheduledDiagnostic, built from the config
  diagnostics_build_sec: float = 0.0
  layout: Any = None  # gmf_jax.train.mesh.Layout: the devices and where arrays live
  step: StepOptions = StepOptions()  # augmentation, precision, accumulation, averaged weights
  evaluated: tuple[str, ...] = ("live",)  # the weights evaluation runs on: 'live', 'ema'
  piecewise: dict = dataclasses.field(default_factory=dict)  # key -> (steps, values)

  def loss_for(self, values: dict[str, Any]):
    """The loss with its data fields from `values` (e.g. `state.hparams`, arrays)."""
    return with_values(self.loss, values)

  def tx_for(self, values: dict[str, Any]) -> optax.GradientTransformation:
    """The optimizer (and its schedule) with the values in `values` (e.g. `state.hparams`)."""
    tx = self.optimizer.build(lambda count: self.schedule(count, values), values)
    if self.config.on_nonfinite == "skip":  # a NaN/Inf step leaves params and state alone
      tx = optax.apply_if_finite(tx, max_consecutive_errors=self.config.max_consecutive_nonfinite)
    return tx


def _run_length(config: ml_collections.ConfigDict, num_train: int) -> tuple[int, int]:
  """(num_steps, steps per epoch): `num_epochs`, when given, sets the number of steps."""
  if config.batch_size > num_train:
    raise ConfigError(
        f"batch_size={config.batch_size} is larger than the training set of "
        f"{config.data.name!r} ({num_train} examples); set --config.batch_size<={num_train}."
    )
  steps_per_epoch = num_train // config.batch_size
  num_steps = config.num_steps
  if config.num_epochs is not None:
    num_steps = config.num_epochs * steps_per_epoch
    check_int("num_steps", num_steps, low=1, high=MAX_STEPS,
              hint=f"(num_epochs={config.num_epochs} x {steps_per_epoch} steps per epoch)")
  return num_steps, steps_per_epoch


def build_experiment(config: ml_collections.ConfigDict,
                     like: Experiment | None = None, population: int = 1) -> Experiment:
  """Builds data, model, loss, optimizer and schedule, checking the config as it goes.

  Args:
    config: the run's config.
    like: an experiment with the same program (a population's first member, see
      `gmf_jax.train.hparams.program_key`): its data, model and diagnostics are shared, and
      only the member's own values are built and checked.
    population: the members that train in the program (`mesh.members=0` splits them over as
      many devices as divide them; see `gmf_jax.train.mesh`).

  Returns:
    The experiment; its `config` is the resolved config (what config.json records): options
    the config file set for a component the user switched away from are left out.

  Raises:
    ConfigError: on the first bad key or value, naming it.
  """
  _check_scalars(config)
  # Members of one program share the layout (program_key holds mesh.* and batch_size).
  if like is None:  # several processes: jax.distributed starts before any device is touched
    distributed.initialize(config.get("distributed") or job.ONE_PROCESS)
  layout = (make_layout(config.mesh, config.batch_size, population=population)
            if like is None else like.layout)
  options = ComponentOptions(config_origin(config))
  if like is None:
    dataset = make_dataset(config.data, options)
  else:
    dataset = like.dataset
    options.dropped.extend(k for k in like.dropped if k.startswith(("data.", "model.")))
  num_steps, steps_per_epoch = _run_length(config, len(dataset.train))
  model = make_model(config.model, dataset, options) if like is None else like.model
  loss = make_loss(config.loss, options)
  step, evaluated, step_values = _step_options(config, dataset, layout)
  eval_metrics = (_evaluated_metrics(_check_model_fits_loss(model, loss, dataset, config),
                                     evaluated) if like is None else like.eval_metrics)
  config = _best_follows_evaluated(config, evaluated, eval_metrics)
  _check_checkpoint(config.checkpoint, eval_metrics)
  _check_wandb(config.wandb)
  schedule = make_schedule(config.schedule, config.optimizer.learning_rate, num_steps, options)
  optimizer = prepare_optimizer(config.optimizer, options)
  values = {**optimizer.values(), **schedule.values(), **loss_values(loss), **step_values}
  exp = Experiment(_without(config, options.dropped), dataset, model, loss, None, schedule,
                   num_steps, steps_per_epoch, on_device=_keep_on_device(config.data, dataset),
                   eval_metrics=eval_metrics, optimizer=optimizer,
                   hparams=hparams_lib.as_arrays(values), dropped=tuple(options.dropped),
                   layout=layout, step=step, evaluated=evaluated)
  exp = dataclasses.replace(exp, tx=exp.tx_for({}),
                            piecewise=piecewise_lib.parse(config, exp.hparams, num_steps))
  if like is not None:
    return dataclasses.replace(exp, diagnostics=like.diagnostics)
  from gmf_jax.diagnostics import make_diagnostics  # diagnostics build on the experiment

  start = time.perf_counter()
  diagnostics = tuple(make_diagnostics(config.diagnostics, exp))
  return dataclasses.replace(exp, diagnostics=diagnostics,
                             diagnostics_build_sec=time.perf_counter() - start)


EVALUATE = {"live": ("live",), "ema": ("ema",), "both": ("live", "ema")}


def _step_options(config, dataset: Dataset, layout) -> tuple[StepOptions, tuple, dict]:
  """The train step's parts from `data.augment`, `precision`, `optimizer.accumulate_steps`
  and `ema`, checked; with the weights evaluation runs on, and the values that are data."""
  augment = make_augment(setting(config, "data.augment"), dataset)
  compute = setting(config, "precision.compute")
  check_choice("precision.compute", compute, tuple(precision.COMPUTE))
  k = setting(config, "optimizer.accumulate_steps")
  check_int("optimizer.accumulate_steps", k, low=1, hint="1: one batch per optimizer step.")
  if config.batch_size % k:
    raise ConfigError(
        f"batch_size={config.batch_size} is not divisible by optimizer.accumulate_steps={k}: "
        "a step is k micro-batches of batch_size / k examples; choose a divisor.")
  if k > 1 and layout.data > 1 and (config.batch_size // k) % layout.data:
    raise ConfigError(
        f"micro-batches of batch_size / optimizer.accumulate_steps = "
        f"{config.batch_size // k} examples do not split over mesh.data={layout.data} devices; "
        "choose batch_size and accumulate_steps so that they do.")
  decay, evaluate = setting(config, EMA_DECAY), setting(config, "ema.evaluate")
  check_number(EMA_DECAY, decay, low=0, high=1, low_open=True, high_open=True, allow_none=True,
               hint="e.g. 0.999; None: no averaged weights.")
  check_choice("ema.evaluate", evaluate, tuple(EVALUATE))
  if decay is None and evaluate != "live":
    raise ConfigError(f"ema.evaluate={evaluate!r} needs averaged weights: set "
                      "ema.decay (e.g. 0.999), or ema.evaluate='live'.")
  values = {}
  if augment is not None and augment.noise:
    values[NOISE_KEY] = setting(config, NOISE_KEY)
  if decay is not None:
    values[EMA_DECAY] = decay
  step = StepOptions(augment=augment, compute_dtype=precision.compute_dtype(compute),
                     loss_scaling=precision.scales_loss(compute), accumulate_steps=k,
                     ema=decay is not None)
  return step, EVALUATE[evaluate], values


def _evaluated_metrics(names: tuple[str, ...], evaluated: tuple[str, ...]) -> tuple[str, ...]:
  """The eval metrics' names: `<name>` for the live weights, `ema/<name>` for the averaged."""
  return tuple(n if w == "live" else f"ema/{n}" for w in evaluated for n in names)


def _best_follows_evaluated(config, evaluated, eval_metrics):
  """With only the averaged weights evaluated, `checkpoint.best_metric=eval/<name>` means
  `eval/ema/<name>` (the resolved config records that)."""
  best, names = config.checkpoint.best_metric, {f"eval/{m}" for m in eval_metrics}
  followed = "eval/ema/" + (best or "")[len("eval/"):]
  if evaluated != ("ema",) or not (best or "").startswith("eval/") or best in names or (
      followed not in names):
    return config  # nothing to follow (a name that is no metric: _check_checkpoint names them)
  config = copy.deepcopy(config)
  with config.unlocked():
    config.checkpoint.best_metric = followed
  return config


def _without(config: ml_collections.ConfigDict, dropped: list[str]) -> ml_collections.ConfigDict:
  """A copy of `config` with the `dropped` keys back at their defaults (or removed, for keys
  the default config does not have)."""
  if not dropped:
    return config
  defaults = flatten(default_config())
  resolved = copy.deepcopy(config)
  resolved.unlock()
  for key in dropped:
    *parents, leaf = key.split(".")
    node = resolved
    for part in parents:
      node = node[part]
    if key in defaults:
      node[leaf] = defaults[key]
    else:
      del node[leaf]
  resolved.lock()
  return resolved


def init_state(exp: Experiment, keys: RunKeys, values: dict[str, Any] | None = None
               ) -> TrainState:
  """The initial train state: parameters from `keys.init`, optimizer state from `exp.tx`,
  and the hyperparameters (`values`, default `exp.hparams`) as arrays.

  One jitted program: run eagerly, every initializer and layer of `init` compiled on its own
  (about 70 small programs, 3.6 s for the default VAE against 1.2 s; the values are bitwise
  the same). The hyperparameters are arguments, not constants, so every value shares it.
  """
  values = exp.hparams if values is None else values
  with _classic_threefry():
    return jax.jit(functools.partial(_init, exp))(keys.init, values)


def init_population(exp: Experiment, keys: RunKeys, values: dict[str, Any]) -> TrainState:
  """The initial state of a population: `keys` and `values` have a leading member axis; so
  does every leaf of the state except the shared step counter. A population of one is the
  single run's state with a member axis added."""
  size = len(keys.init)
  first = lambda tree: jax.tree_util.tree_map(lambda a: a[0], tree)
  if size == 1:
    return with_member_axis(init_state(exp, first(keys), first(values)))
  like = jax.eval_shape(functools.partial(_init, exp), keys.init[0], first(values))
  fn = jax.vmap(functools.partial(_init, exp), out_axes=member_axes(like))
  with _classic_threefry():
    return jax.jit(fn)(keys.init, values)


def _classic_threefry():
  """Init's random draws with JAX's classic threefry: the parameters are still a function of
  the seed alone, and XLA on the CPU compiles draws of 4-D shapes (convolution kernels) several
  times faster than with the partitionable threefry (init of a ResNet-8: 31 s against 5 s,
  measured here). Init is one program on the host's terms; training keeps JAX's default."""
  return jax.threefry_partitionable(False)


def _init(exp: Experiment, key: jax.Array, values: dict[str, Any]) -> TrainState:
  x = jnp.zeros((1, *exp.dataset.example_shape), jnp.float32)
  params_key, sample_key, dropout_key = jax.random.split(key, 3)
  variables = exp.model.init(
      {"params": params_key, "sample": sample_key, "dropout": dropout_key}, x, train=False
  )
  params, model_state = split_variables(variables)
  hparams = {k: jnp.asarray(v) for k, v in values.items()}
  return TrainState.create(
      apply_fn=exp.model.apply, params=params, tx=exp.tx, hparams=hparams,
      model_state=model_state,
      ema=ema_init(params, model_state) if exp.step.ema else {},
      loss_scale=precision.initial_loss_scale() if exp.step.loss_scaling else {})


def abstract_state(exp: Experiment, keys: RunKeys) -> TrainState:
  """The train state's shapes and dtypes, without computing it (a restore target)."""
  return jax.eval_shape(lambda: init_state(exp, keys))


def _check_scalars(config) -> None:
  """The run's own keys: seed, lengths, sizes, data placement, the non-finite policy."""
  check_int("seed", config.seed, low=0, high=2**32 - 1,
            hint="(JAX keys hold 32 bits: larger seeds would repeat smaller ones.)")
  if config.num_epochs is None:
    check_int("num_steps", config.num_steps, low=1, high=MAX_STEPS)
  else:
    check_int("num_epochs", config.num_epochs, low=1, allow_none=True,
              hint="None: use num_steps.")
  for key in POSITIVE_INTS:
    check_int(key, config[key], low=1)
  check_int("probe_size", config.probe_size, low=1)
  check_choice("on_nonfinite", config.on_nonfinite, ("stop", "skip"))
  check_int("max_consecutive_nonfinite", config.max_consecutive_nonfinite, low=1)
  check_choice("data.on_device", config.data.on_device, ("auto", "yes", "no"))
  check_int("data.max_device_bytes", config.data.max_device_bytes, low=0,
            hint="Larger datasets stream from the host with data.on_device='auto'.")
  check_int("data.workers", stream.setting(config.data, "workers"), low=-1,
            hint="-1: chosen by the data (none for arrays in memory); 0: read in this process.")
  check_int("data.prefetch", stream.setting(config.data, "prefetch"), low=1)


def _check_checkpoint(ckpt, eval_metrics: tuple[str, ...]) -> None:
  check_int("checkpoint.every_steps", ckpt.every_steps, low=0,
            hint="0: only at the end and on preemption.")
  check_int("checkpoint.max_to_keep", ckpt.max_to_keep, low=1)
  check_choice("checkpoint.best_mode", ckpt.best_mode, ("auto", "min", "max"))
  names = [f"eval/{m}" for m in eval_metrics]
  if ckpt.best_metric and ckpt.best_metric not in names:
    raise ConfigError(
        f"checkpoint.best_metric={ckpt.best_metric!r} is not an eval metric of this loss; "
        f"choose from {', '.join(names)} (or '' to keep no best checkpoint)."
    )


def _check_wandb(wandb_config) -> None:
  from gmf_jax.runlog.wandb_writer import MODES, wandb_mode

  mode = wandb_mode(wandb_config.mode)
  if mode not in MODES:
    source = "WANDB_MODE" if os.environ.get("WANDB_MODE") else "wandb.mode"
    raise ConfigError(f"{source}={mode!r} must be one of {', '.join(MODES)}.")
  check_number("wandb.init_timeout", wandb_config.init_timeout, low=0, low_open=True)
  project = wandb_config.project
  if not isinstance(project, str) or not project or len(project) > 128 or any(
      c in project for c in _WANDB_PROJECT_FORBIDDEN):
    raise ConfigError(f"wandb.project={project!r} must be 1 to 128 characters without any of "
                      f"{' '.join(_WANDB_PROJECT_FORBIDDEN)}.")
  for tag in wandb_config.tags:
    if not isinstance(tag, str) or not 1 <= len(tag) <= 64:
      raise ConfigError(f"wandb.tags: {tag!r} must be a string of 1 to 64 characters.")


def _check_model_fits_loss(model, loss, dataset: Dataset, config) -> tuple[str, ...]:
  """Traces init and apply abstractly (no compute) and checks the output against the loss.

  Returns:
    The names of the loss's eval metrics.
  """
  x = jax.ShapeDtypeStruct((2, *dataset.example_shape), jnp.float32)
  rngs = {k: jax.random.PRNGKey(0) for k in ("params", "sample", "dropout")}
  name = config.model.name
  try:
    variables = jax.eval_shape(lambda x: model.init(rngs, x, train=False), x)
    params, model_state = split_variables(variables)
    output = jax.eval_shape(
        lambda p, s, x: bound_apply(model.apply, s, {})({"params": p}, x, train=True, rngs=rngs),
        params, model_state, x)
  except ConfigError:
    raise
  except Exception as e:  # the model cannot run on this data: say which and why
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(
        f"model.name={name!r} cannot run on data {dataset.name!r} with inputs of shape "
        f"{dataset.example_shape}: {message}"
    ) from e
  problem = loss.check_output(output, dataset.example_shape, dataset.num_classes)
  if problem:
    raise ConfigError(f"loss.name={config.loss.name!r} {problem}; model.name={name!r} does not.")
  batch = {"x": x, "y": jax.ShapeDtypeStruct((2,), jnp.int32)}
  per_example = jax.eval_shape(
      lambda p, s, b: loss.per_example(p, bound_apply(model.apply, s), b, rngs["sample"]),
      params, model_state, batch)
  return tuple(per_example)


def _keep_on_device(data_config, dataset: Dataset) -> bool:
  if data_config.on_device != "auto":
    return data_config.on_device == "yes"
  nbytes = len(dataset.train) * (math.prod(dataset.example_shape) * 4 + 4)
  return nbytes <= data_config.max_device_bytes
