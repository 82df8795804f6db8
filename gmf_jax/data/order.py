"""The order of the training examples: one permutation per epoch, from the data key alone.

The on-device path draws it inside the jitted chunk, the streamed path (`gmf_jax.data.stream`)
on the host; both call this function, so a run reads the same batches either way.
"""

from __future__ import annotations

import jax


def epoch_permutation(data_key: jax.Array, epoch: jax.Array, num_examples: int) -> jax.Array:
  """The order of the training examples in `epoch`: a function of the seed and epoch only."""
  return jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)
