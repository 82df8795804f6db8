"""`import gmf_jax` and `load_config` stay light, so a typo fails before the training stack
loads (how fast: benchmarks/fast_failure.py)."""

import subprocess
import sys

from tests.conftest import CONFIGS, ROOT

HEAVY = ("jax", "flax", "optax", "orbax", "wandb", "matplotlib", "tensorflow_datasets")


def _imported_heavy(code: str) -> list[str]:
  probe = (f"{code}\nimport sys\n"
           f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))")
  out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                       check=True)
  return eval(out.stdout.strip().splitlines()[-1])  # noqa: S307 - our own printed list


def test_import_and_load_config_do_not_import_the_training_stack():
  code = (f"import gmf_jax\nc = gmf_jax.load_config({str(CONFIGS / 'vae.py')!r}, "
          "['--config.lr=1e-3'])\nassert c.optimizer.learning_rate == 1e-3")
  assert _imported_heavy(code) == []


def test_a_typo_on_the_command_line_fails_before_the_training_stack_loads():
  args = [f"--config={CONFIGS / 'vae.py'}", "--config.optimizer.lerning_rate=1"]
  code = f"from gmf_jax import main\nrc = main.main({args!r})\nassert rc == 2"
  assert _imported_heavy(code) == []


def test_train_and_evaluate_is_still_there():
  code = "import gmf_jax\nassert callable(gmf_jax.train_and_evaluate) and gmf_jax.TrainResult"
  assert "jax" in _imported_heavy(code)


def test_subpackages_are_attributes_of_gmf_jax_without_importing_them_first():
  code = ("import gmf_jax\n"
          "s = gmf_jax.sweep.make_sweep({'config': 'configs/mlp.py', 'method': 'grid', "
          "'parameters': {'lr': {'values': [0.1, 0.2]}}})\n"
          "assert len(s.members) == 2\n"
          "assert callable(gmf_jax.analysis.load_runs) and 'sweep' in dir(gmf_jax)")
  _imported_heavy(code)  # raises (check=True) when the code fails
