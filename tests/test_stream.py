"""Streamed training data through grain: the same batches as on the device, from any number of
reader processes, each process reading only its rows."""

import os
import pickle

import jax
import numpy as np
import pytest

import gmf_jax
from gmf_jax.data import make_dataset
from gmf_jax.data.order import epoch_permutation
from gmf_jax.data.stream import StepBatch, default_workers, open_stream
from tests.conftest import CONFIGS, tree_equal

MLP = str(CONFIGS / "mlp.py")


def _digits_batch(batch_size=32, rows=None, **blocks):
  ds = make_dataset({"name": "digits"})
  return ds, StepBatch(ds.train, batch_size, np.asarray(jax.random.PRNGKey(3)), rows, **blocks)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_stream_yields_each_step_of_the_epoch_order(workers):
  ds = make_dataset({"name": "digits"})
  per_epoch = len(ds.train) // 32  # 44 steps
  stop = 2 * per_epoch + 5  # blocks of 10 steps across two epoch boundaries; the last is short
  _, batch = _digits_batch(block_steps=10, stop=stop)
  stream = open_stream(batch, 3, workers=workers, prefetch=2)  # from step 30
  try:
    blocks = list(stream)
  finally:
    stream.close()
  assert [len(b["y"]) for b in blocks] == [10] * 6 + [3]  # steps 30..92
  xs, ys = np.concatenate([b["x"] for b in blocks]), np.concatenate([b["y"] for b in blocks])
  key = jax.random.PRNGKey(3)
  for i, step in enumerate(range(30, stop)):
    epoch, position = divmod(step, per_epoch)
    idx = np.asarray(epoch_permutation(key, epoch, len(ds.train)))[position * 32:][:32]
    np.testing.assert_array_equal(xs[i], ds.train.arrays["x"][idx])
    np.testing.assert_array_equal(ys[i], ds.train.arrays["y"][idx])


def test_chunks_cut_across_blocks_are_the_steps_batches():
  from gmf_jax.train.pipeline import StreamedBatches

  ds, batch = _digits_batch()
  feed = StreamedBatches(ds.train, 32, np.asarray(jax.random.PRNGKey(3)), slots=8,
                         num_steps=30)
  try:
    for start, n in ((0, 8), (8, 5), (13, 8), (21, 8), (29, 1)):  # misaligned after step 13
      got = feed.get(start, n) if start != 13 else (feed.prefetch(13, 8), feed.get(13, 8))[1]
      assert got["x"].shape[0] == 8  # padded to the compiled chunk's slots
      for i in range(n):
        np.testing.assert_array_equal(got["x"][i], batch(start + i)["x"])
      assert not got["x"][n:].any()
  finally:
    feed.close()


def test_processes_read_disjoint_rows_that_make_up_the_global_batch():
  _, full = _digits_batch()
  parts = [_digits_batch(rows=(lo, lo + 8))[1] for lo in range(0, 32, 8)]
  for step in (0, 7, 60):
    joined = {k: np.concatenate([p(step)[k] for p in parts]) for k in ("x", "y")}
    np.testing.assert_array_equal(joined["x"], full(step)["x"])
    np.testing.assert_array_equal(joined["y"], full(step)["y"])
  full.permutation(0)
  assert pickle.loads(pickle.dumps(full))._cache == {}  # workers rebuild the order themselves


def test_reader_processes_by_default_only_for_files(tiny_tfds_dir):
  assert default_workers(make_dataset({"name": "digits"}).train) == 0
  tfds_split = make_dataset({"name": "tfds:gmf_tiny_digits", "data_dir": str(tiny_tfds_dir)}).train
  assert default_workers(tfds_split) == max(0, min(4, os.cpu_count() - 1))  # a core left over


def test_a_tfds_dataset_streams_through_a_reader_process(tmp_path, tiny_tfds_dir):
  def run(name, **extra):
    config = gmf_jax.load_config(MLP + ":smoke", {
        "data.name": "tfds:gmf_tiny_digits", "batch_size": 16, "num_steps": 30,
        "eval_every_steps": 30, **extra})
    config.unlock()
    config.data.data_dir = str(tiny_tfds_dir)
    config.lock()
    return gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / name))

  device = run("device", **{"data.on_device": "yes"})
  streamed = run("streamed", **{"data.on_device": "no", "data.workers": 1})
  for a, b in zip(jax.tree_util.tree_leaves(device.state.params),
                  jax.tree_util.tree_leaves(streamed.state.params), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  again = run("again", **{"data.on_device": "no", "data.workers": 0})
  assert tree_equal(streamed.state.params, again.state.params)  # workers change nothing
