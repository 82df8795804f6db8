"""Reads back real offline wandb runs with `gmf_jax.runlog.wandb_reader`."""

from __future__ import annotations

import os
import warnings

import pytest

from gmf_jax.runlog import wandb_reader

wandb = pytest.importorskip("wandb")

CONFIG = {"a": 1, "opt": {"lr": 0.1}}
LOGGED = {10: 0.5, 20: 0.25, 30: 0.125}


def _offline_run(tmp, config, log):
  """Runs wandb offline in `tmp`; `log(run)` logs. Returns the path of the `.wandb` file."""
  with pytest.MonkeyPatch.context() as mp:
    env = {"WANDB_SILENT": "true", "WANDB_MODE": "offline", "WANDB_CONFIG_DIR": tmp / "config",
           "WANDB_CACHE_DIR": tmp / "cache", "WANDB_DATA_DIR": tmp / "data"}
    for name, value in env.items():
      mp.setenv(name, str(value))
    settings = wandb.Settings(console="off", save_code=False, x_disable_stats=True,
                              x_disable_meta=True, x_disable_machine_info=True)
    run = wandb.init(mode="offline", dir=str(tmp), project="p", config=config, settings=settings)
    log(run)
    run.finish()
    # finish() only informs wandb-core that the run is done (fire and forget); the tail of
    # the .wandb file can still be unwritten when it returns. teardown() waits for wandb-core.
    wandb.teardown()
  paths = wandb_reader.find_offline_runs(str(tmp / "wandb"))
  assert len(paths) == 1, paths  # the `latest-run` symlink is not followed
  return paths[0]


def _log_metrics(run):
  for step, loss in LOGGED.items():
    run.log({"train/loss": loss, "eval": {"acc": step / 100}}, step=step)
  run.summary["best_loss"] = 0.125


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
  return _offline_run(tmp_path_factory.mktemp("small"), CONFIG, _log_metrics)


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
  """A run whose config record is over two 32 KiB blocks long, so needs first/middle/last."""
  big = "".join(chr(ord("a") + i % 26) for i in range(3 * wandb_reader.BLOCK_LEN))
  log = lambda run: run.log({"after": 1.0}, step=1)
  return _offline_run(tmp_path_factory.mktemp("big"), {"big": big}, log), big


def _read(path, **kwargs):
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    return list(wandb_reader.read_records(path, **kwargs))


def test_reads_config_history_summary_and_exit_code(small_run):
  run = wandb_reader.read_offline_run(small_run)
  assert os.path.basename(small_run) == f"run-{run.run_id}.wandb"
  assert run.config == CONFIG
  assert [row["_step"] for row in run.history] == list(LOGGED)
  assert [row["train/loss"] for row in run.history] == list(LOGGED.values())
  assert [row["eval"] for row in run.history] == [{"acc": s / 100} for s in LOGGED]
  assert all(isinstance(row["_timestamp"], float) for row in run.history)
  assert run.summary["best_loss"] == 0.125
  assert run.summary["train/loss"] == 0.125 and run.summary["_step"] == 30
  assert run.summary["eval"] == {"acc": 0.3}
  assert run.exit_code == 0
  kinds = [r.WhichOneof("record_type") for r in run.records]
  assert kinds[0] == "header" and "run" in kinds and kinds[-1] == "exit"


def test_record_spanning_several_blocks(big_run):
  path, big = big_run
  records = _read(path)
  run_record = next(r for r in records if r.WhichOneof("record_type") == "run")
  assert run_record.ByteSize() > 2 * wandb_reader.BLOCK_LEN  # so it has a middle chunk
  run = wandb_reader.read_offline_run(path)
  assert run.config == {"big": big}
  assert [row["after"] for row in run.history] == [1.0]
  assert run.exit_code == 0


@pytest.mark.parametrize("which", ["small", "big"])
def test_truncated_file_yields_the_complete_records_before_the_cut(
    which, small_run, big_run, tmp_path):
  path = small_run if which == "small" else big_run[0]
  data = open(path, "rb").read()
  full = _read(path)
  cut_path = tmp_path / "cut.wandb"
  counts = []
  # Evenly spaced cuts, cuts around block boundaries, and cuts in the last few bytes (each
  # write is a few ms here, so not every size).
  block = wandb_reader.BLOCK_LEN
  sizes = {*range(wandb_reader.FILE_HEADER_LEN, len(data), max(1, len(data) // 40)),
           *(n * block + d for n in (1, 2, 3) for d in (-8, -7, -1, 0, 1, 7, 8)),
           *range(len(data) - 3, len(data) + 1)}
  for size in sorted(s for s in sizes if s <= len(data)):
    cut_path.write_bytes(data[:size])
    got = _read(str(cut_path))  # no exception, no warning
    assert got == full[:len(got)]
    counts.append(len(got))
  assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == len(full)
  cut_path.write_bytes(data[:-1])  # cut inside the last record (the exit record)
  run = wandb_reader.read_offline_run(str(cut_path))
  assert run.records == full[:-1] and run.exit_code is None


def test_corrupt_record_stops_with_warning_or_raises_when_strict(small_run, tmp_path):
  full = _read(small_run)
  data = bytearray(open(small_run, "rb").read())
  assert len(data) < wandb_reader.BLOCK_LEN  # one block: record k starts after k full chunks
  k = len(full) // 2
  start = wandb_reader.FILE_HEADER_LEN + sum(7 + r.ByteSize() for r in full[:k])
  data[start + 7 + 1] ^= 0xFF  # flip a byte of record k's payload: checksum mismatch
  bad = tmp_path / "bad.wandb"
  bad.write_bytes(bytes(data))
  with pytest.warns(UserWarning, match="corrupt record"):
    got = list(wandb_reader.read_records(str(bad)))
  assert got == full[:k]
  with pytest.raises(ValueError, match="checksum mismatch"):
    list(wandb_reader.read_records(str(bad), strict=True))


def test_rejects_a_file_that_is_not_a_wandb_file(tmp_path):
  path = tmp_path / "run-x.wandb"
  path.write_bytes(b"not a wandb file")
  with pytest.raises(ValueError, match="not a .wandb file"):
    wandb_reader.read_offline_run(str(path))


def test_find_offline_runs_sorted(tmp_path):
  for name in ["offline-run-2-b", "offline-run-1-a"]:
    (tmp_path / name).mkdir()
    (tmp_path / name / f"run-{name[-1]}.wandb").write_bytes(b"")
    (tmp_path / name / "other.txt").write_bytes(b"")
  assert wandb_reader.find_offline_runs(str(tmp_path)) == [
      str(tmp_path / "offline-run-1-a" / "run-a.wandb"),
      str(tmp_path / "offline-run-2-b" / "run-b.wandb")]


def test_a_run_folder_reads_as_one_run_across_resumed_sessions(tmp_path):
  """`read_offline_run` takes a run folder; a resumed run's sessions (one file each, one run
  id, as gmf_jax resumes a run) read back as one run, in order."""
  first = lambda run: run.log({"train/loss": 0.5}, step=10)
  second = lambda run: run.log({"train/loss": 0.25}, step=20)
  for log in (first, second):
    with pytest.MonkeyPatch.context() as mp:
      for name, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"),
                        ("WANDB_DATA_DIR", "data")):
        mp.setenv(name, str(tmp_path / sub))
      mp.setenv("WANDB_SILENT", "true")
      run = wandb.init(mode="offline", dir=str(tmp_path), project="p", id="resumedrun",
                       resume="allow", config=CONFIG,
                       settings=wandb.Settings(console="off", x_disable_stats=True))
      log(run)
      run.finish()
      wandb.teardown()
  assert len(wandb_reader.find_offline_runs(str(tmp_path))) == 2
  run = wandb_reader.read_offline_run(str(tmp_path))  # the folder, not a file
  assert run.run_id == "resumedrun" and run.config == CONFIG
  assert [(row["_step"], row["train/loss"]) for row in run.history] == [(10, 0.5), (20, 0.25)]
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="holds no offline wandb run"):
    wandb_reader.read_offline_run(str(tmp_path / "empty"))
