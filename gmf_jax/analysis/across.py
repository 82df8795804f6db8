"""The diagnostics across members of a sweep's populations, as the report shows them.

They are written in each population's folder (`populations/<id>/diagnostics/<name>/step_N.*`,
scalars in `populations/<id>/metrics.csv`; see `gmf_jax.diagnostics.population`); this reads
those files only.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import shutil


def across_members(path: str) -> list[dict]:
  """Each population folder under `path` with diagnostics across members: {'population': its
  folder relative to `path`, 'members': names, 'step': the latest step any of them ran at,
  'scalars': {name: value} of that step, 'figures': [PNG paths of that step]}."""
  found = []
  for folder in sorted(glob.glob(os.path.join(glob.escape(path), "populations", "*"))):
    rows = _rows(os.path.join(folder, "metrics.csv"))
    if not rows:
      continue
    step = max(int(r["step"]) for r in rows)
    try:
      with open(os.path.join(folder, "population.json")) as f:
        members = json.load(f).get("members", [])
    except (OSError, ValueError):
      members = []
    figures = sorted(glob.glob(os.path.join(glob.escape(folder), "diagnostics", "*",
                                            f"step_{step}_*.png")))
    found.append({"population": os.path.relpath(folder, path), "members": members,
                  "step": step,
                  "scalars": {r["name"]: float(r["value"]) for r in rows
                              if int(r["step"]) == step},
                  "figures": figures})
  return found


def _rows(path: str) -> list[dict[str, str]]:
  if not os.path.exists(path):
    return []
  with open(path, newline="") as f:
    rows = []
    for r in csv.DictReader(f):
      try:
        int(r["step"]), float(r["value"])
      except (TypeError, ValueError, KeyError):
        continue  # a torn line
      rows.append(r)
    return rows


def markdown_section(path: str, out: str) -> str:
  """The report's section on them ('' where no population has any); their figures are copied
  into the report folder `out`."""
  found = across_members(path)
  if not found:
    return ""
  lines = ["", "## Across members", "",
           "Diagnostics over each population's members at once (cka: linear CKA between "
           "members' layer outputs; mode_connectivity: the loss barrier on the straight line "
           "between two members' weights; ensemble: the averaged prediction against each "
           "member), on the probe batch, from `populations/<id>/`.", ""]
  for entry in found:
    members = entry["members"]
    lines += [f"### `{entry['population']}`: {len(members)} members, step {entry['step']}", "",
              "| diagnostic | value |", "|---|---|"]
    lines += [f"| {name[len('diag/'):] if name.startswith('diag/') else name} | {value:.4g} |"
              for name, value in entry["scalars"].items()]
    lines.append("")
    for png in entry["figures"]:
      name = os.path.basename(os.path.dirname(png))
      copy = "across_" + re.sub(r"[^A-Za-z0-9_.-]", "_", f"{entry['population']}_{name}_"
                                                       f"{os.path.basename(png)}")
      shutil.copyfile(png, os.path.join(out, copy))
      lines += [f"![{name}]({copy})", ""]
  return "\n".join(lines)
