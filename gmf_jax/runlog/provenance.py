"""Provenance: what ran, on what, from which code, so a run can be explained and repeated.

Every function here is safe to call at the start of a run: none raises on a missing package, a
missing `git` or a folder outside a repository; gaps come back as None or an `error` field.
"""

from __future__ import annotations

import getpass
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from typing import Any

# Distribution names (as pip knows them), so no module is imported just to read its version.
PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "numpy",
    "ml-collections",
    "tensorflow-datasets",
    "wandb",
    "gmf_jax",
)
GIT_TIMEOUT_S = 10.0
# Keeps summary/config files readable when someone runs with a huge or binary change around.
MAX_DIFF_CHARS = 1_000_000


def versions() -> dict[str, str | None]:
  """Versions of Python and the packages a run depends on; None for one not installed."""
  found: dict[str, str | None] = {"python": platform.python_version()}
  for name in PACKAGES:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      found[name] = None
  return found


def devices() -> dict[str, Any]:
  """JAX's backend and devices; `{"error": ...}` if the backend cannot start."""
  try:
    import jax

    devs = jax.devices()
    return {
        "backend": jax.default_backend(),
        "platform": devs[0].platform if devs else None,
        "device_count": len(devs),
        "local_device_count": jax.local_device_count(),
        "device_kinds": [str(d.device_kind) for d in devs],
        "process_count": jax.process_count(),
        "process_index": jax.process_index(),
    }
  except Exception as e:  # a broken accelerator setup must not stop the run from recording
    return {"error": f"{type(e).__name__}: {e}"}


def host_info() -> dict[str, Any]:
  """The machine and process: hostname, platform string, pid, user, cpu count."""
  try:
    user = getpass.getuser()
  except Exception:  # no passwd entry and no $USER, as in some containers
    user = None
  return {
      "hostname": socket.gethostname(),
      "platform": platform.platform(),
      "pid": os.getpid(),
      "user": user,
      "cpu_count": os.cpu_count(),
  }


def command_line() -> list[str]:
  """The command that started this process, interpreter first, so it can be pasted back.

  `python -m pkg.mod` shows up in sys.argv as the module's file path; it is written back as
  `-m pkg.mod` when the module is known.
  """
  argv = list(sys.argv)
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  if argv and spec is not None and spec.name and argv[0] == getattr(main, "__file__", None):
    argv[0:1] = ["-m", spec.name]
  return [sys.executable, *argv]


def git_info(path: str) -> dict[str, Any]:
  """The state of the git repository holding `path` (a folder or a file in one).

  Args:
    path: e.g. the gmf_jax source folder, or the folder of the config file.

  Returns:
    `root`, `commit` (full sha), `branch` (None when detached), `dirty` (tracked changes or
    untracked, not ignored, files), `diff` (`git diff HEAD` plus a list of untracked files; None
    when clean) and `error` (None, or why the rest is incomplete). Never raises.
  """
  info: dict[str, Any] = {
      "root": None, "commit": None, "branch": None, "dirty": None, "diff": None, "error": None,
  }
  folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    info["error"] = f"no such folder: {folder}"
    return info
  ok, out = _git(folder, "rev-parse", "--show-toplevel")
  if not ok:
    info["error"] = out
    return info
  # From the top, so untracked files anywhere in the repository are listed, by their full path.
  info["root"] = folder = out.strip()
  ok, out = _git(folder, "symbolic-ref", "--short", "-q", "HEAD")
  info["branch"] = out.strip() if ok and out.strip() else None
  ok, out = _git(folder, "rev-parse", "--verify", "-q", "HEAD")
  if ok:
    info["commit"] = out.strip()
  else:
    info["error"] = "the repository has no commits yet"
  ok, status = _git(folder, "status", "--porcelain", "--untracked-files=all")
  if not ok:
    info["error"] = status
    return info
  info["dirty"] = bool(status.strip())
  if info["dirty"]:
    info["diff"] = _diff(folder, info["commit"])
  return info


def _diff(folder: str, commit: str | None) -> str:
  """`git diff` against HEAD (or the empty tree before the first commit), then untracked files."""
  base = commit
  if base is None:
    ok, out = _git(folder, "hash-object", "-t", "tree", "--stdin", stdin="")
    base = out.strip() if ok else None
  parts = []
  if base is not None:
    ok, out = _git(folder, "diff", "--no-color", "--no-ext-diff", base)
    parts.append(out if ok else f"(git diff failed: {out})\n")
  ok, out = _git(folder, "ls-files", "--others", "--exclude-standard")
  untracked = out.splitlines() if ok else []
  if untracked:
    parts.append("# Untracked files (not in the diff above):\n")
    parts.extend(f"#   {name}\n" for name in untracked)
  text = "".join(parts)
  if len(text) > MAX_DIFF_CHARS:
    text = text[:MAX_DIFF_CHARS] + f"\n# ... diff truncated at {MAX_DIFF_CHARS} characters\n"
  return text


def _git(cwd: str, *args: str, stdin: str | None = None) -> tuple[bool, str]:
  """Runs `git ARGS` in `cwd`: (True, stdout) on success, else (False, a one-line reason)."""
  # No optional locks: `git status` must not race with the user's own git commands.
  env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}
  feed = {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
  try:
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          errors="replace", timeout=GIT_TIMEOUT_S, **feed)
  except FileNotFoundError:
    return False, "git is not installed"
  except subprocess.TimeoutExpired:
    return False, f"git {args[0]} timed out after {GIT_TIMEOUT_S:g} s"
  except OSError as e:
    return False, f"git {args[0]} failed: {e}"
  if proc.returncode != 0:
    return False, _reason(proc.stderr) or f"git {args[0]} exited with {proc.returncode}"
  return True, proc.stdout


def _reason(stderr: str) -> str:
  """The `fatal:` line of git's stderr (hints follow it, e.g. for safe.directory), else the last."""
  lines = [line.strip() for line in stderr.splitlines() if line.strip()]
  fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
  return (fatal or lines or [""])[0 if fatal else -1]
