"""JAX's persistent compilation cache, turned on from the config: a rerun skips compiling.

Every run of a config compiles the same programs (the training chunk, the evaluation, the
diagnostics, the initialisation). With the cache on, the first run writes the compiled
executables to a folder and every later run of the same programs (reruns, other seeds) loads
them instead: on this CPU that takes about 3 s off the default job's 12.7 s. (A learning rate
is a constant inside the training chunk: changing one compiles the chunk again.)

The executables are keyed by the program, the compile options, the JAX and XLA versions and the
device, so a hit gives the same binary and so bitwise the same numbers as compiling again.
The cache is bounded in size (least recently used entries go first); that turns on JAX's file
lock, so parallel processes (pytest -n, a sweep) can share one folder.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import platform
import threading

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from gmf_jax.checks import check_number
from gmf_jax.errors import ConfigError

log = logging.getLogger("gmf_jax")

ENV_DIR = "GMF_JAX_COMPILE_CACHE_DIR"  # what 'auto' uses when set (tests point it at a tmp dir)
MB = 2**20


def default_dir() -> str:
  """`$GMF_JAX_COMPILE_CACHE_DIR`, else `~/.cache/gmf_jax/jax/<machine>` (`$XDG_CACHE_HOME`
  in place of ~/.cache when set)."""
  if os.environ.get(ENV_DIR):
    return os.environ[ENV_DIR]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "gmf_jax", "jax", machine_tag())


def machine_tag() -> str:
  """Names the CPU type: its architecture, model and instruction-set flags, hashed.

  Compiled CPU code uses the instructions of the CPU it was compiled on. A home folder shared
  by a cluster's different nodes gets one cache per CPU type, so no node loads code its CPU
  cannot run.
  """
  text = platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      text += "".join(sorted({line for line in f if line.startswith(("model name", "flags"))}))
  except OSError:
    text += platform.processor()
  return f"{platform.machine()}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def resolve_dir(spec: str | None) -> str:
  """The folder `compile_cache.dir` names: '' (or None) for off, 'auto' for `default_dir()`."""
  if not spec:
    return ""
  path = default_dir() if spec == "auto" else spec
  return os.path.abspath(os.path.expanduser(path))


def enable(cache_config) -> str:
  """Points JAX's persistent cache at `cache_config.dir` for this process.

  A cache folder the user already gave JAX (`JAX_COMPILATION_CACHE_DIR` or `jax.config`) wins
  over 'auto'. Call before anything is compiled that should be cached; a process that compiled
  without a cache starts using it from the next compilation.

  Returns:
    The folder in use, or '' when the cache is off.

  Raises:
    ConfigError: `compile_cache.dir` or `compile_cache.max_size_mb` is unusable.
  """
  spec = cache_config.get("dir", "auto")
  max_size_mb = cache_config.get("max_size_mb", 2048)
  check_number("compile_cache.max_size_mb", max_size_mb, low=0, low_open=True,
               hint="(Or set compile_cache.dir='' to turn the cache off.)")
  path = resolve_dir(spec)
  current = jax.config.jax_compilation_cache_dir
  if not path:
    if current:
      log.warning("compile_cache.dir='' cannot turn off JAX's compilation cache, already on in "
                  "this process (%s); start a new process to run without it.", current)
    return current or ""
  if current and (spec == "auto" or os.path.abspath(current) == path):
    return current  # the user's own JAX setting, or already on
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write-test-{os.getpid()}-{threading.get_ident()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise ConfigError(
        f"compile_cache.dir={spec!r}: cannot write to {path} ({e.strerror}); choose a "
        "writable folder, or set --config.compile_cache.dir='' to turn the cache off.") from e
  if current:
    log.warning("JAX's compilation cache already uses %s in this process; compile_cache.dir=%r "
                "is ignored (JAX keeps one cache folder per process).", current, spec)
    return current
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_compilation_cache_max_size", int(max_size_mb * MB))
  # Every compilation is worth keeping: the cheapest ones here take 5-50 ms to compile, about
  # ten times what reading them back costs.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax_cache.reset_cache()  # forget an earlier "no cache" verdict of this process
  return path


class CacheCounter:
  """Counts JAX's cache hits, misses and the compile time hits saved, from its monitoring events.

  JAX's listeners cannot be removed, so one counter lives for the process; a run reads the
  difference between two `snapshot()`s.
  """

  EVENTS = {"/jax/compilation_cache/cache_hits": "hits",
            "/jax/compilation_cache/cache_misses": "misses"}
  SAVED = "/jax/compilation_cache/compile_time_saved_sec"

  def __init__(self):
    self._counts = collections.Counter()
    self._lock = threading.Lock()
    jax.monitoring.register_event_listener(self._on_event)
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)

  def _on_event(self, event: str, **_) -> None:
    if event in self.EVENTS:
      with self._lock:
        self._counts[self.EVENTS[event]] += 1

  def _on_duration(self, event: str, duration: float, **_) -> None:
    if event == self.SAVED:
      with self._lock:
        self._counts["saved_sec"] += duration

  def snapshot(self) -> dict[str, float]:
    with self._lock:
      return {"hits": self._counts["hits"], "misses": self._counts["misses"],
              "saved_sec": self._counts["saved_sec"]}


_counter: CacheCounter | None = None
_counter_lock = threading.Lock()


def counter() -> CacheCounter:
  """The process's one `CacheCounter`."""
  global _counter
  with _counter_lock:
    if _counter is None:
      _counter = CacheCounter()
    return _counter


def usage_since(before: dict[str, float], path: str) -> dict:
  """What `summary.json` records: the folder, hits, misses and seconds of compiling saved."""
  now = counter().snapshot()
  return {"dir": path, "hits": now["hits"] - before["hits"],
          "misses": now["misses"] - before["misses"],
          "saved_sec": round(now["saved_sec"] - before["saved_sec"], 3)}
