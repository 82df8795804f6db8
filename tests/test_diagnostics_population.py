"""Diagnostics over a population's member axis (`runner.PopulationDiagnostics`): each member gets
what its own sliced state gives, the old per-member form still runs, and the built-ins' figures
redraw from their saved npz alone.

Tolerance: a member computed under vmap is not bitwise the member computed alone (XLA batches
the matmuls differently); every value is compared at 1e-6 (`TOL`), relative and absolute, except
latent_space's PCA coordinates at 1e-5 (`PCA_TOL`): an axis of an untrained encoder's means is
only as stable as the gap to the next singular value (seen: 3.4e-6 apart, float32 SVDs batched
and not).
"""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmf_jax
from gmf_jax.diagnostics import Diagnostic, DiagnosticResult, ScheduledDiagnostic, draw_figures
from gmf_jax.diagnostics.runner import (
    PopulationDiagnostics,
    Target,
    diagnostic_rng,
    probe_batch,
)
from gmf_jax.diagnostics.schedule import Schedule
from gmf_jax.members import member, with_member_axis
from gmf_jax.runlog.writers import RowBuffer
from gmf_jax.train.build import build_experiment, init_population
from gmf_jax.train.step import make_keys
from tests.conftest import CONFIGS

TOL = 1e-6
PCA_TOL = 1e-5
SIZE = 4
MLP_DIAGNOSTICS = {"weight_stats": {}, "activation_stats": {}, "confusion_matrix": {},
                   "jacobian": {"num": 8}}
VAE_DIAGNOSTICS = {"reconstructions": {"num": 4}, "samples": {"num": 4}, "latent_space": {},
                   "latent_traversal": {"num_dims": 2, "num_values": 3},
                   "jacobian": {"num": 8}, "hessian": {"k": 2, "num_iters": 4,
                                                       "trace_samples": 2, "batch_size": 16}}


def _stack(trees):
  return jax.tree_util.tree_map(lambda *a: jnp.stack([jnp.asarray(x) for x in a]), *trees)


class _Setup:
  """An experiment, a population of SIZE members (their own seeds and learning rates), its
  probe and diagnostic keys."""

  def __init__(self, path: str, entries: dict):
    config = gmf_jax.load_config(str(CONFIGS / path) + ":smoke", {"probe_size": 32})
    with config.diagnostics.unlocked():
      for name, options in entries.items():
        config.diagnostics[name] = {"schedule": "end", **options}
    self.exp = build_experiment(config)
    keys = _stack([make_keys(seed) for seed in range(SIZE)])
    values = _stack([{**self.exp.hparams, "optimizer.learning_rate": np.float32(0.01 * (i + 1))}
                     for i in range(SIZE)])
    self.state = init_population(self.exp, keys, values)
    self.probe = probe_batch(self.exp, config.probe_size)
    self.diag_keys = keys.diag  # (SIZE, 2)

  def diagnostic(self, name: str):
    (d,) = [d for d in self.exp.diagnostics if d.name == name]
    return d


@pytest.fixture(scope="module")
def mlp():
  return _Setup("mlp.py", MLP_DIAGNOSTICS)


@pytest.fixture(scope="module")
def vae():
  return _Setup("vae.py", VAE_DIAGNOSTICS)


def _run(diagnostics, probe, diag_keys, state, folders, indices, *, runner=None):
  """Runs at step 7 (on `runner`, given its keys, if given) and returns {folder: rows}."""
  writers = {folder: RowBuffer() for folder in folders}
  if runner is None:
    runner = PopulationDiagnostics(diagnostics, probe, diag_keys, draw=True)
  runner.diag_keys = diag_keys
  runner.run(7, state, [Target(i, f, writers[f]) for i, f in zip(indices, folders, strict=True)],
             force=True)
  return {f: {r["name"]: float(r["value"]) for r in w.rows} for f, w in writers.items()}


def _files(folder):
  out = {}
  for root, _, names in os.walk(folder):
    for name in names:
      out[os.path.relpath(os.path.join(root, name), folder)] = os.path.join(root, name)
  return out


@pytest.mark.parametrize("setup, name", [
    ("mlp", "weight_stats"), ("mlp", "activation_stats"), ("mlp", "confusion_matrix"),
    ("mlp", "jacobian"), ("vae", "reconstructions"), ("vae", "latent_space"),
    ("vae", "jacobian"), ("vae", "latent_traversal"),
])
def test_each_member_gets_what_its_own_state_gives(setup, name, request, tmp_path):
  s = request.getfixturevalue(setup)
  d = s.diagnostic(name)
  together = [str(tmp_path / f"together-{i}") for i in range(SIZE)]
  # Member 2 is left out (as a failed member is): computed, not written.
  written = [0, 1, 3]
  rows = _run([d], s.probe, s.diag_keys, s.state, [together[i] for i in written], written)
  assert not os.path.exists(together[2])
  one = PopulationDiagnostics([d], s.probe, s.diag_keys[:1], draw=True)  # compiled once
  for i in written:
    alone = str(tmp_path / f"alone-{i}")
    alone_rows = _run([d], s.probe, s.diag_keys[i:i + 1], with_member_axis(member(s.state, i)),
                      [alone], [0], runner=one)[alone]
    got = rows[together[i]]
    assert got.keys() == alone_rows.keys(), (name, i)
    for key, value in alone_rows.items():
      assert got[key] == pytest.approx(value, rel=TOL, abs=TOL), (name, i, key)
    files, alone_files = _files(together[i]), _files(alone)
    assert files.keys() == alone_files.keys() and files, (name, i)
    for rel, path in files.items():
      if rel.endswith(".npz"):
        with np.load(path) as a, np.load(alone_files[rel]) as b:
          assert a.files == b.files
          for key in a.files:
            if a[key].dtype.kind in "US":
              np.testing.assert_array_equal(a[key], b[key])
            else:
              tol = PCA_TOL if key == "coords" else TOL
              np.testing.assert_allclose(a[key], b[key], rtol=tol, atol=tol, err_msg=key)
  # The members differ (their own seeds and learning rates): no member got another's values.
  saved = []
  for i in written:
    with np.load(os.path.join(together[i], "diagnostics", name, "step_7.npz")) as f:
      saved.append(b"".join(f[k].tobytes() for k in f.files))
  assert len(set(saved)) == len(written)


def test_a_population_of_one_computes_what_compute_gives_on_the_member(mlp, tmp_path):
  """A single run: bitwise `compute` on the member's own state, with diagnostic_rng's key."""
  d = mlp.diagnostic("weight_stats")
  one = with_member_axis(member(mlp.state, 1))
  rows = _run([d], mlp.probe, mlp.diag_keys[1:2], one, [str(tmp_path)], [0])[str(tmp_path)]
  scalars, arrays = jax.jit(d.diagnostic.compute)(
      member(mlp.state, 1), mlp.probe, diagnostic_rng(mlp.diag_keys[1], "weight_stats", 7))
  assert rows == {f"diag/weight_stats/{k}": float(v) for k, v in scalars.items()}
  with np.load(tmp_path / "diagnostics" / "weight_stats" / "step_7.npz") as saved:
    assert saved.files == ["names", "param_norm", "grad_norm", "update_ratio"]
    for key, value in arrays.items():
      np.testing.assert_array_equal(saved[key], value)
  # Rows keep compute's order: the totals first, then each array's.
  assert list(rows)[:3] == [f"diag/weight_stats/{k}" for k in ("param_norm", "grad_norm",
                                                                "update_ratio")]


def test_the_old_form_runs_once_per_member_and_says_so(mlp, tmp_path, caplog):
  calls = []

  def make_logit_scale(exp):
    @jax.jit
    def scale(params, x):
      return jnp.mean(jnp.abs(exp.model.apply({"params": params}, x)))

    def run(state, probe, rng):
      calls.append(1)
      value = float(scale(state.params, probe["x"]))
      return DiagnosticResult(scalars={"value": value}, arrays={"value": np.asarray([value])})

    return run

  d = ScheduledDiagnostic("logit_scale", make_logit_scale(mlp.exp), Schedule(frozenset({7})))
  folders = [str(tmp_path / f"m{i}") for i in range(SIZE)]
  with caplog.at_level(logging.INFO, logger="gmf_jax"):
    rows = _run([d], mlp.probe, mlp.diag_keys, mlp.state, folders, list(range(SIZE)))
  said = [r for r in caplog.records if r.name == "gmf_jax" and "logit_scale" in r.getMessage()]
  assert len(said) == 1 and said[0].levelno == logging.INFO
  assert "not vmapped" in said[0].getMessage() and "once per member" in said[0].getMessage()
  assert len(calls) == SIZE
  for i, folder in enumerate(folders):
    own = d.diagnostic(member(mlp.state, i), mlp.probe, None).scalars["value"]
    assert rows[folder] == {"diag/logit_scale/value": pytest.approx(own, rel=TOL)}
    assert os.path.exists(os.path.join(folder, "diagnostics", "logit_scale", "step_7.npz"))


@pytest.mark.parametrize("setup, name", [
    ("mlp", "confusion_matrix"), ("mlp", "jacobian"), ("vae", "reconstructions"),
    ("vae", "samples"), ("vae", "latent_space"), ("vae", "latent_traversal"),
    ("vae", "jacobian"),
])
def test_figures_redraw_from_the_saved_arrays(setup, name, request, tmp_path):
  from gmf_jax.runlog.plots import save_png

  s = request.getfixturevalue(setup)
  folder = str(tmp_path / "run")
  rows = _run([s.diagnostic(name)], s.probe, s.diag_keys[:1],
              with_member_axis(member(s.state, 0)), [folder], [0])[folder]
  out = os.path.join(folder, "diagnostics", name)
  drawn = sorted(f for f in os.listdir(out) if f.endswith(".png"))
  assert drawn, name
  with np.load(os.path.join(out, "step_7.npz")) as saved:
    arrays = dict(saved)
  scalars = {k.split("/", 2)[2]: v for k, v in rows.items()}
  figures = draw_figures(name, arrays, scalars)
  assert sorted(f"step_7_{fig}.png" for fig in figures) == drawn
  for fig_name, fig in figures.items():  # the very same picture, byte for byte
    again = save_png(fig, str(tmp_path / f"{fig_name}.png"))
    with open(again, "rb") as a, open(os.path.join(out, f"step_7_{fig_name}.png"), "rb") as b:
      assert a.read() == b.read(), (name, fig_name)
  # Without the scalars too (the built-ins draw from the arrays alone).
  assert draw_figures(name, arrays).keys() == figures.keys()


def test_draw_figures_is_none_without_a_drawer():
  assert draw_figures("hessian", {"top_eigenvalues": np.ones(3)}) is None
  assert draw_figures("my_pkg.diags:make_curvature", {}) is None
  points = {"inputs": np.zeros((4, 2)), "reconstructions": np.zeros((4, 2))}
  assert draw_figures("reconstructions", points) == {}  # points: no image grid


def test_steps_and_due_follow_each_schedule(vae):
  a, b = vae.diagnostic("samples"), vae.diagnostic("hessian")
  a = ScheduledDiagnostic(a.name, a.diagnostic, Schedule(frozenset({5, 10})))
  b = ScheduledDiagnostic(b.name, b.diagnostic, Schedule(frozenset({3, 10})))
  runner = PopulationDiagnostics([a, b], vae.probe, vae.diag_keys, draw=False)
  assert runner.steps == frozenset({3, 5, 10})
  assert runner.due(10) == [a, b] and runner.due(3) == [b] and runner.due(4) == []


def test_warm_up_compiles_on_shapes_and_a_run_uses_it(mlp, tmp_path):
  d = mlp.diagnostic("weight_stats")
  runner = PopulationDiagnostics([d], mlp.probe, mlp.diag_keys, draw=False)
  like = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), mlp.state)
  runner.warm_up(like).join()
  program = runner._programs["weight_stats"]
  assert program._compiled is not None
  writer = RowBuffer()
  runner.run(7, mlp.state, [Target(0, str(tmp_path), writer)], force=True)
  assert program._compiled is not None  # taken as it is, not compiled again
  assert any(r["name"] == "diag/weight_stats/param_norm" for r in writer.rows)


def test_every_built_in_is_the_new_form(mlp, vae):
  for setup in (mlp, vae):
    for d in setup.exp.diagnostics:
      assert isinstance(d.diagnostic, Diagnostic), d.name


def test_a_user_diagnostic_in_the_new_form_from_a_file(tmp_path):
  """The README's example: a factory returning Diagnostic(compute, draw), named by its file."""
  import textwrap

  (tmp_path / "my_diags.py").write_text(textwrap.dedent('''
      import jax.numpy as jnp
      from matplotlib.figure import Figure
      from gmf_jax.diagnostics import Diagnostic

      def make_logit_scale(exp, power=2):
        def compute(state, probe, rng):
          logits = exp.model.apply({"params": state.params}, probe["x"])
          return {"value": jnp.mean(jnp.abs(logits) ** power)}, {"logits": logits}

        def draw(arrays, scalars):
          fig = Figure()
          fig.add_subplot().hist(arrays["logits"].ravel())
          return {"hist": fig}

        return Diagnostic(compute, draw=draw)
  '''))
  config = gmf_jax.load_config(str(CONFIGS / "mlp.py") + ":smoke", {"probe_size": 32})
  with config.diagnostics.unlocked():
    config.diagnostics.logit_scale = {"fn": f"{tmp_path / 'my_diags.py'}:make_logit_scale",
                                      "every_steps": 20, "power": 1}
  gmf_jax.train_and_evaluate(config, workdir=str(tmp_path / "run"))
  out = tmp_path / "run" / "diagnostics" / "logit_scale"
  assert sorted(os.listdir(out)) == ["step_20.npz", "step_20_hist.png", "step_40.npz",
                                     "step_40_hist.png"]
  with np.load(out / "step_40.npz") as saved:
    assert saved["logits"].shape == (32, 10)
    value = float(np.mean(np.abs(saved["logits"])))
  with open(tmp_path / "run" / "metrics.csv") as f:
    rows = [line.split(",") for line in f if ",diag/logit_scale/value," in line]
  assert [r[0] for r in rows] == ["20", "40"]
  assert float(rows[1][2]) == pytest.approx(value, rel=1e-6)
