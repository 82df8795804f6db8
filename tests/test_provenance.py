"""Provenance: package versions, devices, host, command line and the state of a git repository."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import pytest

from gmf_jax.runlog import provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture(autouse=True)
def plain_git(tmp_path, monkeypatch):
  """Keeps the machine's git config and any repository above tmp_path out of the tests."""
  monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
  monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
  monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))


def git(cwd, *args: str) -> str:
  out = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                       check=True, capture_output=True, text=True)
  return out.stdout


@pytest.fixture
def repo(tmp_path):
  """A repository with one commit: a tracked file and a .gitignore ignoring *.log."""
  path = tmp_path / "repo"
  path.mkdir()
  git(path, "init", "-q", "-b", "main")
  (path / "train.py").write_text("print('hello')\n")
  (path / ".gitignore").write_text("*.log\n")
  git(path, "add", "train.py", ".gitignore")
  git(path, "commit", "-q", "-m", "first")
  return path


def test_versions_has_every_package_and_the_running_jax():
  import jax

  found = provenance.versions()
  assert set(found) == {"python", *provenance.PACKAGES}
  assert found["python"] == platform.python_version()
  assert found["jax"] == jax.__version__
  assert found["gmf_jax"] is not None


def test_versions_reports_a_missing_package_as_none(monkeypatch):
  monkeypatch.setattr(provenance, "PACKAGES", ("no-such-package-gmf",))
  assert provenance.versions()["no-such-package-gmf"] is None


def test_devices_describes_the_backend():
  import jax

  info = provenance.devices()
  assert info["backend"] == jax.default_backend()
  assert info["device_count"] == len(info["device_kinds"]) == jax.device_count()
  assert all(isinstance(kind, str) for kind in info["device_kinds"])
  assert (info["process_count"], info["process_index"]) == (1, 0)


def test_host_info_and_command_line():
  info = provenance.host_info()
  assert info["pid"] == os.getpid()
  assert info["hostname"] and info["platform"]
  assert info["cpu_count"] == os.cpu_count()
  assert provenance.command_line() == [sys.executable, *sys.argv]


@needs_git
def test_clean_repo(repo):
  info = provenance.git_info(str(repo))
  assert info["commit"] == git(repo, "rev-parse", "HEAD").strip()
  assert info["branch"] == "main"
  assert info["dirty"] is False
  assert info["diff"] is None
  assert info["error"] is None


@needs_git
def test_ignored_files_do_not_make_it_dirty(repo):
  (repo / "out.log").write_text("noise\n")
  assert provenance.git_info(str(repo))["dirty"] is False


@needs_git
def test_modified_tracked_file_is_in_the_diff(repo):
  (repo / "train.py").write_text("print('hello')\nprint('changed')\n")
  info = provenance.git_info(str(repo))
  assert info["dirty"] is True
  assert "+print('changed')" in info["diff"]


@needs_git
def test_untracked_file_is_listed_by_its_full_path(repo):
  (repo / "configs").mkdir()
  (repo / "configs" / "new.py").write_text("x = 1\n")
  (repo / "sub").mkdir()
  # Asked from a file in another subfolder: untracked files anywhere in the repo still count.
  (repo / "sub" / "cfg.py").write_text("")
  git(repo, "add", "sub/cfg.py")
  git(repo, "commit", "-q", "-m", "sub")
  info = provenance.git_info(str(repo / "sub" / "cfg.py"))
  assert info["root"] == str(repo.resolve())
  assert info["dirty"] is True
  assert "configs/new.py" in info["diff"]


@needs_git
def test_detached_head_has_no_branch(repo):
  git(repo, "checkout", "-q", "--detach")
  info = provenance.git_info(str(repo))
  assert info["branch"] is None
  assert info["commit"] == git(repo, "rev-parse", "HEAD").strip()


@needs_git
def test_folder_outside_a_repo(tmp_path):
  info = provenance.git_info(str(tmp_path))
  assert info["commit"] is None
  assert info["dirty"] is None
  assert "not a git repository" in info["error"]


def test_missing_folder():
  info = provenance.git_info("/no/such/folder/config.py")
  assert info["commit"] is None and info["error"]


@needs_git
def test_repo_without_commits(tmp_path):
  git(tmp_path, "init", "-q", "-b", "main")
  assert provenance.git_info(str(tmp_path))["dirty"] is False
  (tmp_path / "a.py").write_text("a = 1\n")
  git(tmp_path, "add", "a.py")
  info = provenance.git_info(str(tmp_path))
  assert info["commit"] is None
  assert info["branch"] == "main"
  assert info["error"] == "the repository has no commits yet"
  assert info["dirty"] is True
  assert "+a = 1" in info["diff"]  # staged files, diffed against the empty tree


def test_without_a_git_binary(tmp_path, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path))
  info = provenance.git_info(str(tmp_path))
  assert info["commit"] is None
  assert info["error"] == "git is not installed"
