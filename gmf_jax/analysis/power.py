"""How many seeds a comparison needs: the power of the t-tests `compare` runs.

    from gmf_jax.analysis import seeds_needed
    seeds_needed([0.81, 0.84, 0.79, 0.83], [0.85, 0.83, 0.86, 0.88])  # seeds per group

The power is exact for normal values: the t statistic then follows the noncentral t
distribution (scipy's `nct`), so no normal approximation undercounts small samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

MAX_SEEDS = 100_000  # the search stops here: past it, `PowerOutOfReach`
POWER = 0.8


class PowerOutOfReach(ValueError):
  """No number of seeds up to `MAX_SEEDS` per group reaches the power asked for."""


def seeds_needed(a, b=None, *, effect: float | None = None, power: float = POWER,
                 alpha: float = 0.05, paired: bool | None = None) -> int:
  """The seeds per group a two-sided t-test needs to detect `effect` with `power`.

      seeds_needed(a_values, b_values)                  # to detect the observed difference
      seeds_needed(a_values, b_values, effect=0.01)     # to detect 0.01
      seeds_needed({0: 0.81, 1: 0.84, 2: 0.79}, {0: 0.85, 1: 0.83, 2: 0.86})  # paired on seeds
      seeds_needed(differences)                         # one group: its mean against 0

  The spread is the observed one. Unpaired, it is `sd = sqrt((sd_a**2 + sd_b**2) / 2)` (the
  sample SDs, ddof=1): with n runs per group the difference of means then has the standard
  error `sd * sqrt(2 / n)` whatever the observed group sizes, and the test is the pooled
  t-test, noncentrality `effect / (sd * sqrt(2 / n))`, df `2n - 2`. `compare` runs Welch's
  t-test, whose statistic with n runs per group is the same; its df is `2n - 2` when the two
  spreads are equal and smaller otherwise, so with very unequal spreads the n here is a little
  optimistic. Paired (and for one group), the test is `ttest_rel` (the one-sample t-test):
  `sd` is that of the differences b - a (of `a` itself with `b=None`), noncentrality
  `effect / (sd / sqrt(n))`, df `n - 1`. The power is P(|T| > t_crit) under the noncentral t,
  both tails, `t_crit` the two-sided critical value at `alpha`.

  Args:
    a: one group's values per run: a sequence or array, or a dict `{seed: value}`. With
      `b=None`, the one group tested against 0: paired differences, or anything whose mean
      is the effect.
    b: the other group, the same way; None for one group.
    effect: the difference of means to detect (its sign does not matter); None: the observed
      one, mean(b) - mean(a) (mean(a) with `b=None`; the mean difference when paired).
    power: the chance of a p-value below `alpha` when the difference is `effect`.
    alpha: the test's level.
    paired: None decides as `compare` does: paired when `a` and `b` are both dicts whose
      shared seeds are at least 75% of each (`stats.PAIRED_SHARE`), on those seeds; values
      without seeds are unpaired. True pairs dicts on their shared seeds, sequences by
      position (they must have one length).

  Non-finite values (diverged runs) are left out, as `compare` leaves them out.

  Returns:
    The smallest n >= 2 whose power reaches `power`: n seeds per group (n pairs when paired,
    n values for one group).

  Raises:
    ValueError: power or alpha outside (0, 1); fewer than 2 finite values (or pairs) in a
      group; no spread (standard deviation 0); an effect of 0 (or not finite).
    PowerOutOfReach (a ValueError): more than `MAX_SEEDS` seeds per group would be needed.
  """
  for name, value in (("power", power), ("alpha", alpha)):
    if not (isinstance(value, (int, float)) and 0 < value < 1):
      raise ValueError(f"{name}={value!r}: it must be a number between 0 and 1, exclusive")
  d, sd, paired = _sample(a, b, paired)
  observed = effect is None
  if observed:
    effect = float(np.mean(d[0]) - np.mean(d[1])) if len(d) == 2 else float(np.mean(d[0]))
  what = "the observed difference of means" if observed else "the difference to detect"
  if not math.isfinite(effect) or effect == 0:
    why = "no number of seeds detects a difference of 0" if effect == 0 else "not finite"
    raise ValueError(f"effect={effect!r} ({what}): {why}; pass effect= the smallest "
                     "difference that matters")
  n = _smallest_n(abs(effect), sd, paired, power, alpha)
  if n is None:
    raise PowerOutOfReach(
        f"effect={effect:.6g} against a spread of sd={sd:.6g} needs more than {MAX_SEEDS} "
        f"seeds per group for {power:g} power at alpha={alpha:g} (the search stops there)")
  return n


def _t_power(n, effect: float, sd: float, paired: bool, alpha: float) -> np.ndarray:
  """The power of the two-sided t-test with n seeds per group (n may be an array)."""
  from scipy import stats

  n = np.asarray(n, float)
  if paired:
    df, nc = n - 1, effect / (sd / np.sqrt(n))
  else:
    df, nc = 2 * n - 2, effect / (sd * np.sqrt(2 / n))
  t_crit = stats.t.ppf(1 - alpha / 2, df)
  # P(T < -t_crit) as the upper tail at -nc: scipy's nct.cdf gives NaN there for nc near 10+.
  return stats.nct.sf(t_crit, df, nc) + stats.nct.sf(t_crit, df, -nc)


def _smallest_n(effect: float, sd: float, paired: bool, power: float,
                alpha: float) -> int | None:
  """The smallest n in [2, MAX_SEEDS] with `_t_power` >= power (it grows with n); None if
  none. n doubles until the power is reached, then bisects: the noncentrality never grows far
  past the one needed, where scipy's nct stays accurate."""
  low, high = 2, 2  # once the power at `high` is reached, the answer lies in [low, high]
  while _t_power(high, effect, sd, paired, alpha) < power:
    if high == MAX_SEEDS:
      return None
    low, high = high + 1, min(2 * high, MAX_SEEDS)
  while low < high:
    mid = (low + high) // 2
    if _t_power(mid, effect, sd, paired, alpha) >= power:
      high = mid
    else:
      low = mid + 1
  return low


def _sample(a, b, paired: bool | None) -> tuple[list[np.ndarray], float, bool]:
  """The finite values ([differences] or [a] when paired or one group, else [b, a]), the
  spread the test sees, and whether it is paired."""
  from gmf_jax.analysis.stats import _pairs

  if b is None:
    if paired is False:
      raise ValueError("paired=False needs two groups: pass b, or leave paired out to test "
                       "the one group's mean against 0")
    x = _values(a)[0]
    _enough(x, "a")
    return [x], _sd(x, "a"), True
  (xa, seeds_a), (xb, seeds_b) = _values(a), _values(b)
  keyed = seeds_a is not None and seeds_b is not None
  shared = sorted(set(seeds_a) & set(seeds_b)) if keyed else []
  if paired is None:
    paired = keyed and _pairs(len(shared), len(xa), len(xb))
  if paired:
    if keyed:
      at_a, at_b = dict(zip(seeds_a, xa, strict=True)), dict(zip(seeds_b, xb, strict=True))
      d = np.asarray([at_b[s] - at_a[s] for s in shared], float)
    else:
      a_all, b_all = _array(a), _array(b)
      if len(a_all) != len(b_all):
        raise ValueError(f"paired=True pairs a and b by position, but a has {len(a_all)} "
                         f"values and b {len(b_all)}: pass dicts {{seed: value}} to pair on "
                         "seeds")
      d = b_all - a_all
      d = d[np.isfinite(d)]
    _enough(d, "the pairs b - a")
    return [d], _sd(d, "the paired differences b - a"), True
  _enough(xa, "a")
  _enough(xb, "b")
  sd_a, sd_b = np.std(xa, ddof=1), np.std(xb, ddof=1)
  if sd_a == 0 and sd_b == 0:
    raise ValueError("a and b have no spread (both standard deviations are 0): nothing to "
                     "size a test by; pass values that vary from run to run")
  return [xb, xa], float(math.sqrt((sd_a**2 + sd_b**2) / 2)), False


def _array(x) -> np.ndarray:
  return np.asarray(list(x.values()) if isinstance(x, Mapping) else x, float).reshape(-1)


def _values(x) -> tuple[np.ndarray, list | None]:
  """The finite values of `x`, and their seeds where `x` is a dict (else None)."""
  values = _array(x)
  finite = np.isfinite(values)
  if isinstance(x, Mapping):
    return values[finite], [s for s, keep in zip(x, finite, strict=True) if keep]
  return values[finite], None


def _enough(x: np.ndarray, name: str) -> None:
  if len(x) < 2:
    raise ValueError(f"{name} has {len(x)} finite value(s): a spread needs at least 2")


def _sd(x: np.ndarray, name: str) -> float:
  sd = float(np.std(x, ddof=1))
  if sd == 0:
    raise ValueError(f"{name} has no spread (standard deviation 0): nothing to size a test "
                     "by; pass values that vary from run to run")
  return sd
