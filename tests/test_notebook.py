"""The Colab quickstart runs top to bottom, headless, as a user runs it (so it never rots)."""

from __future__ import annotations

import pathlib

import nbclient
import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def _code_cells(nb) -> list:
  return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_committed_notebook_has_no_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  assert nb.metadata.kernelspec.name == "python3"
  for cell in _code_cells(nb):
    assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


def test_quickstart_runs_top_to_bottom(tmp_path, monkeypatch):
  runs_root = tmp_path / "runs"
  monkeypatch.setenv("GMF_JAX_RUNS", str(runs_root))
  monkeypatch.setenv("WANDB_MODE", "offline")  # as a user gets it (conftest turns wandb off)
  # "python3" is then the kernelspec ipykernel installed beside this interpreter, not one in the
  # user's ~/.local; jupyter_client runs its `python` as sys.executable, so gmf_jax is importable.
  monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # Started from notebooks/, as Jupyter starts a notebook opened there: the notebook finds the
  # repository's root itself.
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(NOTEBOOK.parent)}})
  client.execute()  # raises CellExecutionError, with the cell and its traceback, on an error

  cells = _code_cells(nb)
  outputs = [output for cell in cells for output in cell.outputs]
  assert not [output for output in outputs if output.output_type == "error"]
  assert all(cell.execution_count is not None for cell in cells)
  text = "".join(output.get("text", "") for output in outputs)
  assert "is importable: skipping the install" in text
  assert "skipping Google Drive" in text

  # The run files' tree.
  assert "metrics.csv" in text and "summary.json" in text and "sweep.json" in text

  reports = list(runs_root.rglob("report.md"))
  assert len(reports) == 1, reports
  assert (reports[0].parents[1] / "sweep.json").is_file()  # <sweep>/report/report.md
  report_figures = list(reports[0].parent.glob("*.png"))
  assert report_figures

  # The VAE's 3 diagnostics and its metrics plot, the curves, and every figure of the report.
  pngs = [output for output in outputs if "image/png" in output.get("data", {})]
  assert len(pngs) >= 5 + len(report_figures), len(pngs)

  summary_cell = next(cell for cell in cells if "analysis.summarize(" in cell.source)
  tables = [output.data["text/html"] for output in summary_cell.outputs
            if "text/html" in output.get("data", {})]
  assert tables and "<table" in tables[0] and "ci_low" in tables[0] and "mean" in tables[0]
