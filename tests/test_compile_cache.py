"""JAX's persistent compilation cache: a rerun loads what the first run compiled, with the same
numbers; '' turns it off; a folder that cannot be written fails before the run starts."""

import csv
import json
import os
import platform

from tests.conftest import CONFIGS, run_cli

MLP = str(CONFIGS / "mlp.py")


def _run(tmp_path, name, *args, cache=None):
  env = {"GMF_JAX_COMPILE_CACHE_DIR": str(cache)} if cache else {}
  proc = run_cli(f"--config={MLP}:smoke", f"--workdir={tmp_path / name}", *args, cwd=tmp_path,
                 env=env)
  assert proc.returncode == 0, proc.stderr
  summary = json.loads((tmp_path / name / "summary.json").read_text())
  with open(tmp_path / name / "metrics.csv") as f:
    values = [(r["step"], r["name"], r["value"]) for r in csv.DictReader(f)]
  return summary["compile_cache"], values


def test_rerun_loads_the_compiled_programs_and_gives_the_same_numbers(tmp_path):
  cache = tmp_path / "cache"
  first, first_values = _run(tmp_path, "first", cache=cache)
  assert first["dir"] == str(cache) and first["misses"] >= 5  # init, chunk, eval, ...
  entries = sorted(p.name for p in cache.iterdir() if p.name.endswith("-cache"))
  assert any("train_chunk" in e for e in entries) and any("evaluate" in e for e in entries)

  second, second_values = _run(tmp_path, "second", cache=cache)
  assert second["misses"] == 0 and second["hits"] >= first["misses"]
  assert second_values == first_values  # bitwise: loaded programs are the compiled ones


def test_empty_dir_turns_the_cache_off(tmp_path):
  cache = tmp_path / "cache"
  usage, _ = _run(tmp_path, "off", "--config.compile_cache.dir=", cache=cache)
  assert usage == {"dir": "", "hits": 0, "misses": 0, "saved_sec": 0.0}
  assert not cache.exists()


def test_auto_dir_is_the_env_folder_else_one_per_cpu_type(tmp_path, monkeypatch):
  from gmf_jax import compile_cache

  monkeypatch.setenv("GMF_JAX_COMPILE_CACHE_DIR", str(tmp_path / "mine"))
  assert compile_cache.resolve_dir("auto") == str(tmp_path / "mine")
  monkeypatch.delenv("GMF_JAX_COMPILE_CACHE_DIR")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  auto = compile_cache.resolve_dir("auto")
  assert auto == str(tmp_path / "xdg" / "gmf_jax" / "jax" / compile_cache.machine_tag())
  assert compile_cache.machine_tag().startswith(f"{platform.machine()}-")
  assert compile_cache.resolve_dir("") == ""
  assert compile_cache.resolve_dir("~/c") == os.path.expanduser("~/c")
