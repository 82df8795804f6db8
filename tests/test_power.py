"""gmf_jax.analysis.seeds_needed, and the seeds `compare`, its command and the report say a
difference that is not clear would need.

The power is checked against scipy's noncentral t distribution evaluated here by hand: the n
returned must reach the power and n - 1 must not.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from gmf_jax import analysis
from gmf_jax.analysis import power as power_module
from gmf_jax.analysis import seeds_needed
from tests.test_analysis import _runs_table
from tests.test_analysis_mixed import MLP, _config, _ensemble, _point, _sweep


def _power_by_hand(n: int, effect: float, sd: float, paired: bool, alpha: float) -> float:
  """P(|T| > t_crit) under the noncentral t: the textbook formulas, both tails."""
  if paired:
    df, nc = n - 1, effect / (sd / math.sqrt(n))
  else:
    df, nc = 2 * n - 2, effect / (sd * math.sqrt(2 / n))
  t_crit = sps.t.ppf(1 - alpha / 2, df)
  return sps.nct.sf(t_crit, df, nc) + sps.nct.cdf(-t_crit, df, nc)


def _check_smallest(n, effect, sd, paired, target, alpha):
  assert n > 2  # so n - 1 is a sample size to check
  assert _power_by_hand(n, effect, sd, paired, alpha) >= target
  assert _power_by_hand(n - 1, effect, sd, paired, alpha) < target


A = np.random.default_rng(11).normal(1.0, 0.10, 8)
B = np.random.default_rng(12).normal(1.05, 0.15, 10)


@pytest.mark.parametrize("target, alpha", [(0.8, 0.05), (0.95, 0.01), (0.3, 0.2)])
def test_unpaired_seeds_needed_is_the_smallest_n_reaching_the_noncentral_t_power(target, alpha):
  n = seeds_needed(A, B, power=target, alpha=alpha)
  sd = math.sqrt((np.var(A, ddof=1) + np.var(B, ddof=1)) / 2)  # each group's spread, equally
  _check_smallest(n, B.mean() - A.mean(), sd, False, target, alpha)
  # Given values without seeds, nothing says they pair: even of one length they are unpaired.
  assert seeds_needed(A, B[:8], power=target, alpha=alpha) == seeds_needed(
      A, B[:8], power=target, alpha=alpha, paired=False)


@pytest.mark.parametrize("target, alpha", [(0.8, 0.05), (0.95, 0.01), (0.3, 0.2)])
def test_paired_seeds_needed_is_the_smallest_n_reaching_the_noncentral_t_power(target, alpha):
  rng = np.random.default_rng(0)
  a = rng.normal(1.0, 0.2, 6)
  b = a + 0.01 + rng.normal(0, 0.05, 6)  # the seeds' shared part cancels in b - a
  d = b - a
  n = seeds_needed(dict(enumerate(a)), dict(enumerate(b)), power=target, alpha=alpha)
  _check_smallest(n, d.mean(), np.std(d, ddof=1), True, target, alpha)
  assert n == seeds_needed(a, b, power=target, alpha=alpha, paired=True)  # by position
  assert n == seeds_needed(d, power=target, alpha=alpha)  # the differences as one group
  # Unpaired, the seeds' shared spread stays in: far more seeds.
  assert seeds_needed(a, b, power=target, alpha=alpha) > 3 * n


def test_dicts_pair_as_compare_pairs_them():
  rng = np.random.default_rng(1)
  a = dict(enumerate(rng.normal(1.0, 0.1, 4)))
  b = dict(enumerate(rng.normal(1.1, 0.1, 20)))  # 4 shared seeds of 20: unpaired
  assert seeds_needed(a, b) == seeds_needed(list(a.values()), list(b.values()))
  b5 = {s: b[s] for s in range(5)}  # 4 shared of 4 and 5: paired on the 4
  diffs = [b5[s] - a[s] for s in range(4)]
  assert seeds_needed(a, b5) == seeds_needed(diffs)
  b5[0] = math.nan  # a diverged run is left out, as compare leaves it out
  assert seeds_needed(a, b5) == seeds_needed(diffs[1:])


def test_the_default_effect_is_the_observed_difference():
  observed = B.mean() - A.mean()
  n = seeds_needed(A, B)
  assert n == seeds_needed(A, B, effect=observed) == seeds_needed(A, B, effect=-observed)
  assert seeds_needed(A, B, effect=2 * observed) < n
  d = B[:8] - A
  assert seeds_needed(A, B[:8], paired=True) == seeds_needed(A, B[:8], paired=True,
                                                             effect=d.mean())
  assert seeds_needed(B) == seeds_needed(B, effect=B.mean())  # one group: its mean against 0


def test_past_the_cap_it_raises_saying_so():
  with pytest.raises(power_module.PowerOutOfReach, match="more than 100000 seeds per group"):
    seeds_needed(A, B, effect=1e-4)
  assert issubclass(power_module.PowerOutOfReach, ValueError)


@pytest.mark.parametrize("kwargs, match", [
    ({"power": 0.0}, r"power=0\.0: it must be a number between 0 and 1"),
    ({"power": 1.0}, r"power=1\.0: it must be a number between 0 and 1"),
    ({"power": 80}, r"power=80: it must be a number between 0 and 1"),
    ({"alpha": 0.0}, r"alpha=0\.0: it must be a number between 0 and 1"),
    ({"alpha": 1.5}, r"alpha=1\.5: it must be a number between 0 and 1"),
    ({"a": [1.0]}, r"^a has 1 finite value\(s\): a spread needs at least 2"),
    ({"b": [1.0, math.nan]}, r"^b has 1 finite value\(s\): a spread needs at least 2"),
    ({"b": None, "a": [2.0]}, r"^a has 1 finite value\(s\)"),
    ({"a": {0: 1.0, 1: 2.0}, "b": {1: 2.5, 2: 3.0}, "paired": True},
     r"the pairs b - a has 1 finite value\(s\)"),
    ({"a": [1.0, 1.0], "b": [2.0, 2.0]}, r"a and b have no spread"),
    ({"a": [1.0, 2.0], "b": [2.0, 3.0], "paired": True},
     r"the paired differences b - a has no spread"),
    ({"a": [3.0, 3.0], "b": None}, r"^a has no spread"),
    ({"effect": 0.0}, r"effect=0\.0 \(the difference to detect\): no number of seeds"),
    ({"a": [1.0, 2.0], "b": [2.0, 1.0]},
     r"effect=0\.0 \(the observed difference of means\): no number of seeds"),
    ({"effect": math.inf}, r"effect=inf \(the difference to detect\): not finite"),
    ({"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0], "paired": True},
     r"a has 2 values and b 3"),
    ({"b": None, "paired": False}, r"paired=False needs two groups"),
])
def test_bad_inputs_are_one_clear_error(kwargs, match):
  args = {"a": A, "b": B, **kwargs}
  with pytest.raises(ValueError, match=match):
    seeds_needed(args.pop("a"), args.pop("b"), **args)


def _statement(n, difference: str) -> str:
  return f"about {n} seeds per group would detect a difference of {difference} with 80% power"


@pytest.mark.parametrize("paired", [True, False])
def test_compare_states_the_seeds_needed_when_no_difference_is_clear(paired):
  rng = np.random.default_rng(2)
  a = rng.normal(1.0, 0.1, 6)
  b = a + rng.normal(0.01, 0.1, 6) if paired else rng.normal(1.01, 0.1, 7)
  seeds = {0.1: list(range(6)), 0.2: list(range(len(b)) if paired else range(100, 107))}
  c = analysis.compare(_runs_table({0.1: a, 0.2: b}, seeds=seeds), "eval/loss", {"lr": 0.1},
                       {"lr": 0.2})
  assert c.paired == paired and c.verdict.startswith("no clear difference")
  n = seeds_needed(dict(zip(seeds[0.1], a, strict=True)), dict(zip(seeds[0.2], b, strict=True)))
  assert c.seeds_needed == n and n > 6
  lines = str(c).splitlines()
  statement = f"  {_statement(n, f'{c.difference:.6g}')}"
  assert lines[lines.index(f"  {c.verdict}") + 1] == statement  # under the verdict
  assert c.to_dict()["seeds_needed"] == n


def test_a_clear_difference_states_no_seeds_needed():
  rng = np.random.default_rng(3)
  a = rng.normal(1.0, 0.05, 6)
  c = analysis.compare(_runs_table({0.1: a, 0.2: a - 0.2 + rng.normal(0, 0.01, 6)}),
                       "eval/loss", {"lr": 0.1}, {"lr": 0.2})
  assert "b is better than a" in c.verdict
  assert c.seeds_needed is None and "seeds per group" not in str(c)
  # Too few runs to size anything (one run has no spread): no statement either.
  one = analysis.compare(_runs_table({0.1: a, 0.2: a[:1]}, seeds={0.1: range(6), 0.2: [50]}),
                         "eval/loss", {"lr": 0.1}, {"lr": 0.2})
  assert one.seeds_needed is None and "seeds per group" not in str(one)


def test_the_compare_command_states_the_seeds_needed(tmp_path, capsys):
  from analyze.compare import main

  base = _config(f"{MLP}:smoke")
  a = {0: 0.90, 1: 0.92, 2: 0.88, 3: 0.91, 4: 0.89}
  b = {0: 0.91, 1: 0.89, 2: 0.90, 3: 0.87, 4: 0.92}
  _ensemble(tmp_path / "a", base, a)
  _ensemble(tmp_path / "b", base, b)
  capsys.readouterr()
  assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
  out = capsys.readouterr().out
  difference = np.mean([b[s] - a[s] for s in a])
  assert "(paired on 5 seeds)" in out
  assert _statement(seeds_needed(a, b), f"{difference:.6g}") in out


def test_the_report_states_the_seeds_needed_at_holms_level(tmp_path):
  values = {0.01: [0.90, 0.92, 0.88, 0.91, 0.89, 0.93],   # the best
            0.02: [0.91, 0.89, 0.90, 0.87, 0.92, 0.88],   # no clear difference from it
            0.05: [0.70, 0.71, 0.69, 0.72, 0.70, 0.71]}   # clearly worse
  _sweep(tmp_path, "three", [(_point(f"{MLP}:smoke", **{"optimizer.learning_rate": lr}),
                              dict(enumerate(v))) for lr, v in values.items()])
  report = analysis.write_report(tmp_path, out=tmp_path / "report")
  assert report.best == ["optimizer.learning_rate=0.01"]
  best, close = dict(enumerate(values[0.01])), dict(enumerate(values[0.02]))
  n = seeds_needed(best, close, alpha=0.05 / 2)  # Holm over 2 comparisons surely rejects there
  assert n != seeds_needed(best, close)
  difference = np.mean(values[0.02]) - np.mean(values[0.01])
  text = report.text
  assert ("Where no difference is clear (a t-test at p < 0.025, below which Holm's correction "
          "over the 2 comparisons always rejects):") in text
  assert f"- optimizer.learning_rate=0.02: {_statement(n, f'{difference:.4g}')}\n" in text
  assert "- optimizer.learning_rate=0.05: about" not in text
  table = report.comparisons.set_index("group")
  assert table.loc["optimizer.learning_rate=0.02", "seeds_needed"] == n
  assert table["seeds_needed"].isna()["optimizer.learning_rate=0.05"]


def test_the_readme_example_returns_what_its_comments_say():
  import re

  from tests.conftest import ROOT

  section = (ROOT / "README.md").read_text().split("### How many seeds: `seeds_needed`\n")[1]
  code = re.search(r"^```python\n(.*?)^```", section, flags=re.S | re.M).group(1)
  namespace: dict = {}
  exec(code, namespace)
  claims = re.findall(r"^(analysis\.seeds_needed\(.*\))\s+# (\d+)", code, flags=re.M)
  assert len(claims) == 4
  for call, expected in claims:
    assert eval(call, namespace) == int(expected), call
