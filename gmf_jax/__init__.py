"""gmf_jax: train and analyse neural networks with JAX and Flax.

From a notebook:

    import gmf_jax
    config = gmf_jax.load_config("configs/vae.py", {"optimizer.learning_rate": 1e-3})
    result = gmf_jax.train_and_evaluate(config, workdir="runs/my_vae")
    result.metrics["eval/nelbo"]
"""

from gmf_jax.config import default_config, load_config
from gmf_jax.errors import ConfigError
from gmf_jax.train.loop import NonFiniteError, TrainResult, train_and_evaluate
from gmf_jax.train.preemption import Preempted

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "NonFiniteError",
    "Preempted",
    "TrainResult",
    "default_config",
    "load_config",
    "train_and_evaluate",
]
