"""A sweep or seed ensemble is checked whole before its first file is written: every member of
every population is built, and a folder holding anything but this sweep is refused."""

import json
import os

import pytest

from gmf_jax import ConfigError
from gmf_jax.sweep import make_sweep, run_sweep
from gmf_jax.sweep.run import plan_sweep
from tests.conftest import CONFIGS, run_cli

MLP = str(CONFIGS / "mlp.py") + ":smoke"
TINY = ["--config.num_steps=4", "--config.steps_per_call=2", "--config.log_every_steps=2",
        "--config.eval_every_steps=4", "--config.progress_bar=False"]
NUM_TRAIN = 1437  # the digits train split


def write_sweep(folder, parameters, name="sweep.py"):
  """A sweep file over the smoke MLP whose get_sweep() returns these parameters."""
  path = folder / name
  path.write_text(f"def get_sweep():\n  return {{'config': {MLP!r}, "
                  f"'parameters': {parameters!r}}}\n")
  return str(path)


def sweep_cli(tmp_path, sweep_file, workdir, *args):
  return run_cli(f"--sweep={sweep_file}", f"--workdir={workdir}", *TINY, *args, cwd=tmp_path,
                 module="gmf_jax.sweep")


def assert_one_error_line(proc, fragment):
  """Exit 2 and a stderr of exactly one line, `error: ...` holding `fragment`."""
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  assert fragment in lines[0]


BAD_SWEEPS = {
    # found when the sweep file is loaded
    "unknown key": ({"optimizer.momentun": {"values": [0.5, 0.9]}},
                    "Did you mean 'optimizer.momentum'"),
    # a key the second population's optimizer does not have (optimizer.name is in the program)
    "key unknown to one member": ({"optimizer.name": {"values": ["sgd", "adam"]},
                                   "optimizer.momentum": {"value": 0.5}},
                                  "optimizer.momentum=0.5 has no effect with "
                                  "optimizer.name='adam'"),
    # the second member of the one population
    "out of range": ({"optimizer.momentum": {"values": [0.5, 1.5]}},
                     "optimizer.momentum=1.5 must be in [0, 1)"),
    # batch_size is in the program: 2000 is a population of its own, trained second
    "only the second population's build": ({"batch_size": {"values": [32, 2000]}},
                                           f"batch_size=2000 is larger than the training set "
                                           f"of 'digits' ({NUM_TRAIN} examples)"),
}


@pytest.mark.parametrize("case", BAD_SWEEPS)
def test_a_bad_member_anywhere_is_refused_with_one_line_and_nothing_written(tmp_path, case):
  parameters, fragment = BAD_SWEEPS[case]
  proc = sweep_cli(tmp_path, write_sweep(tmp_path, parameters), tmp_path / "sw")
  assert_one_error_line(proc, fragment)
  assert not (tmp_path / "sw").exists()


def test_the_local_executor_checks_every_population_before_writing(tmp_path):
  sweep_file = write_sweep(tmp_path, BAD_SWEEPS["only the second population's build"][0])
  proc = sweep_cli(tmp_path, sweep_file, tmp_path / "sw", "--executor=local")
  assert_one_error_line(proc, "batch_size=2000 is larger than the training set")
  assert not (tmp_path / "sw").exists()


def test_the_submitit_executor_checks_every_population_before_writing(tmp_path):
  sweep_file = write_sweep(tmp_path, BAD_SWEEPS["key unknown to one member"][0])
  with pytest.raises(ConfigError, match="has no effect with optimizer.name='adam'"):
    run_sweep(sweep_file, str(tmp_path / "sw"), executor="submitit",
              overrides={"progress_bar": False}, submitit_options={"cluster": "local"})
  assert not (tmp_path / "sw").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--executor=local", "--max_workers=0"], "--max_workers=0 must be an integer >= 1"),
    (["--executor=submitit", "--slurm.cluster=local", "--slurm.bogus=1"],
     "--slurm options refused by submitit: Parameter 'bogus'"),
])
def test_an_executor_argument_that_its_run_refuses_is_refused_first(tmp_path, args, fragment):
  sweep_file = write_sweep(tmp_path, {"optimizer.momentum": {"values": [0.5, 0.9]}})
  proc = sweep_cli(tmp_path, sweep_file, tmp_path / "sw", *args)
  assert_one_error_line(proc, fragment)
  assert not (tmp_path / "sw").exists()


def test_a_refused_sweep_once_fixed_runs_in_the_same_folder(tmp_path):
  sweep_file = write_sweep(tmp_path, {"optimizer.momentum": {"values": [0.5, 1.5]}})
  refused = sweep_cli(tmp_path, sweep_file, tmp_path / "sw")
  assert_one_error_line(refused, "optimizer.momentum=1.5 must be in [0, 1)")
  write_sweep(tmp_path, {"optimizer.momentum": {"values": [0.5, 0.9]}})  # the user's fix
  fixed = sweep_cli(tmp_path, sweep_file, tmp_path / "sw")
  assert fixed.returncode == 0, fixed.stderr[-2000:]
  with open(tmp_path / "sw" / "sweep.json") as f:
    members = json.load(f)["members"]
  assert [(m["name"], m["status"]) for m in members] == [
      ("momentum=0.5,seed=0", "completed"), ("momentum=0.9,seed=0", "completed")]


@pytest.mark.parametrize("flags, fragment", [
    (["--config.optimizer.momentum=1.5"], "optimizer.momentum=1.5 must be in [0, 1)"),
    (["--config.mesh.members=2"], "mesh.members=2 does not divide the 1 visible"),
])
def test_a_seed_ensemble_with_a_bad_value_writes_nothing(tmp_path, flags, fragment):
  proc = run_cli(f"--config={MLP}", "--config.num_seeds=2", *flags, *TINY,
                 f"--workdir={tmp_path / 'ens'}", cwd=tmp_path)
  assert_one_error_line(proc, fragment)
  assert not (tmp_path / "ens").exists()


@pytest.mark.parametrize("command", ["sweep", "seed ensemble"])
def test_a_folder_holding_something_else_is_refused_and_left_alone(tmp_path, command):
  folder = tmp_path / "mine"
  folder.mkdir()
  (folder / "thesis.txt").write_text("chapter 1\n")
  if command == "sweep":
    sweep_file = write_sweep(tmp_path, {"optimizer.momentum": {"values": [0.5, 0.9]}})
    proc = sweep_cli(tmp_path, sweep_file, folder)
  else:
    proc = run_cli(f"--config={MLP}", "--config.num_seeds=2", *TINY, f"--workdir={folder}",
                   cwd=tmp_path)
  assert_one_error_line(proc, f"--workdir={folder} is not empty (thesis.txt) and holds no "
                              "sweep.json: not a gmf_jax sweep")
  assert os.listdir(folder) == ["thesis.txt"]
  assert (folder / "thesis.txt").read_text() == "chapter 1\n"


def test_a_new_or_empty_folder_is_fine_and_a_file_is_refused(tmp_path):
  sweep = make_sweep({"config": MLP, "parameters": {"lr": {"values": [0.1, 0.2]}}})
  (tmp_path / "empty").mkdir()
  for folder in ("new", "empty"):
    assert len(plan_sweep(sweep, str(tmp_path / folder)).populations) == 1
  (tmp_path / "afile").write_text("x")
  with pytest.raises(ConfigError, match="afile is a file, not a folder"):
    plan_sweep(sweep, str(tmp_path / "afile"))
  assert not (tmp_path / "new").exists() and os.listdir(tmp_path / "empty") == []
