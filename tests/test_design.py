"""The code's shape: the arrows between gmf_jax's subpackages point one way."""

from __future__ import annotations

import ast
import collections
import pathlib

import gmf_jax

ROOT = pathlib.Path(gmf_jax.__file__).parent


def _subpackage(module: str) -> str | None:
  """gmf_jax.train.loop -> 'train'; a top-level module (gmf_jax.config) is not a subpackage."""
  parts = module.split(".")
  if len(parts) > 1 and parts[0] == "gmf_jax" and (ROOT / parts[1]).is_dir():
    return parts[1]
  return None


def import_edges(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
  """{subpackage: the other subpackages it imports}, from every import statement (lazy ones in
  functions included)."""
  edges: dict[str, set[str]] = collections.defaultdict(set)
  for path in root.rglob("*.py"):
    rel = path.relative_to(root.parent).with_suffix("")
    source = _subpackage(".".join(rel.parts))
    if source is None:
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
      else:
        continue
      for name in names:
        target = _subpackage(name)
        if target and target != source:
          edges[source].add(target)
  return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
  """Every cycle of subpackages, each once (as the path from its smallest name)."""
  found = []

  def walk(path):
    for nxt in sorted(edges.get(path[-1], ())):
      if nxt == path[0]:
        found.append(path)
      elif nxt > path[0] and nxt not in path:
        walk(path + [nxt])

  for start in sorted(edges):
    walk([start])
  return found


def test_no_import_cycle_between_subpackages():
  edges = import_edges()
  assert "train" in edges and "runlog" in edges["train"]  # the walk sees real imports
  assert cycles(edges) == [], {k: sorted(v) for k, v in edges.items()}


def test_the_cycle_finder_finds_a_planted_cycle(tmp_path):
  root = tmp_path / "gmf_jax"
  for pkg, imports in {"a": "from gmf_jax.b import x", "b": "import gmf_jax.c.y",
                       "c": "def f():\n  from gmf_jax.a import z"}.items():
    (root / pkg).mkdir(parents=True)
    (root / pkg / "__init__.py").write_text(imports + "\n")
  global ROOT
  saved, ROOT = ROOT, root
  try:
    assert cycles(import_edges(root)) == [["a", "b", "c"]]
  finally:
    ROOT = saved


def test_the_arrows_that_were_cycles_point_one_way():
  edges = import_edges()
  assert "sweep" not in edges["train"]  # num_seeds is dispatched at the entry points
  assert "train" not in edges["runlog"]
  assert "train" not in edges["diagnostics"]
