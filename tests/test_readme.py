"""The README's shell examples, run as written: from a copy of the project root, with relative
paths, in the README's order (a later command uses what an earlier one made, as a reader's
would), each training command cut to a few steps by overrides appended at its end.

Every command of every ```bash block is either run here or listed in NOT_RUN with the reason
(and where else it is tested), so a new example cannot go untested without a word.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"

# Appended to every command that trains: a few steps, no progress bar. The last value of a key
# wins, so a command's own `--config.num_steps=2000` is cut too.
SMOKE = ["--config.num_steps=20", "--config.steps_per_call=10", "--config.log_every_steps=10",
         "--config.eval_every_steps=10", "--config.progress_bar=False"]
TRAINS = ("gmf_jax.main", "gmf_jax.sweep")

# Commands not run here (matched by a substring), and why.
NOT_RUN = {
    "python3 -m venv": "installs; .ci/run makes a fresh virtual environment the same way",
    "python -m pytest": "the test suite itself",
    "srun ": "needs Slurm",
    "CUDA_VISIBLE_DEVICES=0,1": "needs two GPUs (tests/test_mesh.py runs mesh.data on CPU devices)",
    "--config.mesh.members=8": "needs 8 devices (tests/test_mesh.py: members on a 2 x 2 CPU mesh)",
    "--config.distributed.": "needs two processes (tests/test_multiprocess.py runs them)",
    "sweeps/mlp_hyperband.py": "its rungs need more steps than a smoke run has (tests/"
                               "test_early_stop.py checks it and trains a hyperband sweep)",
    "sweeps/mlp_pbt.py": "its interval needs more steps than a smoke run has (tests/test_pbt.py "
                         "checks it and trains a PBT sweep)",
    "--replay=": "needs a PBT sweep's member (tests/test_pbt.py replays one)",
}
# The install-and-run line: its part after the install is a command of its own.
INSTALL = re.compile(r"^python3 -m venv .*?&& pip install [^&]*&& (?P<rest>.+)$")
# Placeholders a reader fills in with what they made.
PLACEHOLDERS = {"runs/<run>": "runs/wide", "DIR": "runs/report-elsewhere"}


def shell_commands(text: str) -> list[str]:
  """Every command line of the ```bash blocks: continuations joined, comments dropped."""
  commands = []
  for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
    for line in block.replace("\\\n", " ").splitlines():
      line = re.sub(r"\s+#.*$", "", line).strip()
      if line and not line.startswith("#"):
        commands.append(re.sub(r"\s+", " ", line))
  return commands


def python_block_after(text: str, heading: str) -> str:
  """The first ```python block of a README section."""
  section = text.split(f"## {heading}\n", 1)[1]
  return re.search(r"^```python\n(.*?)^```", section, flags=re.S | re.M).group(1)


def variants(command: str) -> list[str]:
  """The command without its optional `[...]` parts and, if it has any, with all of them
  (the first of `a|b` alternatives), placeholders filled in."""
  plain = re.sub(r"\s*\[[^\]]*\]", "", command)
  full = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split("|")[0], command)
  out = [plain] if plain == full else [plain, full]
  for old, new in PLACEHOLDERS.items():
    out = [re.sub(rf"(?<![\w/]){re.escape(old)}(?![\w/])", new, c) for c in out]
  return out


def to_argv(command: str) -> tuple[dict[str, str], list[str]]:
  """Environment assignments in front, then argv with `python` as this interpreter."""
  words = shlex.split(command)
  env = {}
  while words and re.match(r"^[A-Z_]+=", words[0]):
    key, _, value = words.pop(0).partition("=")
    env[key] = value
  assert words[0] in ("python", "python3"), command
  argv = [sys.executable, *words[1:]]
  if len(argv) > 2 and argv[1] == "-m" and argv[2] in TRAINS and "--help" not in argv:
    argv += SMOKE
  return env, argv


def test_every_shell_example_is_run_or_says_why_not():
  commands = shell_commands(README.read_text())
  assert len(commands) >= 15, commands  # the parser found the blocks
  runnable = [c for c in commands if not any(k in c for k in NOT_RUN)]
  assert any(INSTALL.match(c) for c in commands)
  for command in runnable:
    assert command.startswith(("python ", "XLA_FLAGS=")), (
        f"README command {command!r}: run it in tests/test_readme.py or list it in NOT_RUN")


def chains(text: str) -> dict[str, list[str]]:
  """The runnable commands (variants included), in README order, in chains: a command that
  reads a folder of `runs/` runs after the one that made it, in the same copy of the project;
  chains are independent, so the test runs them in parallel workers."""
  out: dict[str, list[str]] = {}
  for command in shell_commands(text):
    install = INSTALL.match(command)
    command = install.group("rest") if install else command
    if any(k in command for k in NOT_RUN):
      continue
    for variant in variants(command):
      sweep = re.search(r"--sweep=sweeps/(\w+)\.py", variant)
      folders = [f"runs/{sweep.group(1)}"] if sweep else re.findall(r"runs/[\w.=-]+", variant)
      key = SAME_CHAIN.get(folders[0], folders[0]) if folders else variant
      out.setdefault(key, []).append(variant)
  return out


# Folders made in the chain of another: `analyze.compare runs/baseline runs/new`.
SAME_CHAIN = {"runs/new": "runs/baseline", "runs/report-elsewhere": "runs/vae_lr_beta"}
CHAINS = chains(README.read_text())


@pytest.mark.parametrize("chain", list(CHAINS), ids=[c[:60] for c in CHAINS])
def test_the_readme_s_shell_examples_work_as_written(tmp_path, chain):
  text = README.read_text()
  project = tmp_path / "project"
  for folder in ("configs", "sweeps"):
    shutil.copytree(ROOT / folder, project / folder)
  (project / "my_data.py").write_text(python_block_after(text, "Your own data"))
  for command in CHAINS[chain]:
    env, argv = to_argv(command)
    proc = subprocess.run(argv, cwd=project, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{command}\n  exit {proc.returncode}: {proc.stderr[-1500:]}"
  # What the commands were meant to make is there.
  made = {
      "runs/wide": lambda: list((project / "runs/wide/diagnostics").iterdir()),  # backfilled
      "runs/vae_lr_beta": lambda: (project / "runs/report-elsewhere/report.md").exists(),
      "runs/baseline": lambda: len(list((project / "runs/baseline").glob("seed=*"))) == 16,
  }
  assert made.get(chain, lambda: True)()


def test_the_runs_chain_together_as_a_reader_would_run_them():
  assert CHAINS["runs/wide"][1].startswith("python -m gmf_jax.diagnose --workdir=runs/wide")
  assert [c.split()[2] for c in CHAINS["runs/baseline"]] == [
      "gmf_jax.main", "gmf_jax.main", "analyze.compare", "analyze.compare"]
  assert [c.split()[2] for c in CHAINS["runs/vae_lr_beta"]] == [
      "gmf_jax.sweep", "analyze.report", "analyze.report"]
