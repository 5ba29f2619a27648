"""The rule by which the study decides that two configurations differ.

A difference counts only when it exceeds the spread over seeds: both configurations
have at least two seeds and their mean ± sd intervals do not overlap,
``|mean_a - mean_b| > sd_a + sd_b`` (sample standard deviations, ddof=1). With three
seeds each this is stricter than a two-sided Welch t-test at the 5% level in most
cases; with the study's few seeds it avoids calling noise a finding. The rule is
applied to this run's numbers only, so a run in which the placements do not differ
says so.

>>> c = compare([0.10, 0.11, 0.09], [0.70, 0.52, 0.61])
>>> c["differs"], c["direction"], round(c["difference"], 2)
(True, 'lower', -0.51)
>>> compare([0.95, 0.94], [0.945, 0.95])["differs"]
False
"""

from __future__ import annotations

import math
from typing import Dict, Sequence

RULE = (
    "a difference counts only when both sides have >= 2 seeds and their mean ± sd "
    "intervals over seeds do not overlap (|difference| > sd_a + sd_b)"
)


def mean_sd(values: Sequence[float]):
    """Mean and sample standard deviation (ddof=1; 0.0 for one value; NaN for none).
    Non-finite values (a diverged run) are kept: they make the mean NaN."""
    vals = [float(v) for v in values]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def compare(a: Sequence[float], b: Sequence[float]) -> Dict:
    """Compares the values of ``a`` with those of ``b`` (e.g. test accuracies over seeds).

    Returns a dict: ``mean_a, sd_a, n_a, mean_b, sd_b, n_b, difference`` (a - b),
    ``differs`` (the rule of this module) and ``direction`` (``"higher"``, ``"lower"``
    or ``"same"``: a relative to b, ``"same"`` when it does not differ).
    """
    ma, sa = mean_sd(a)
    mb, sb = mean_sd(b)
    diff = ma - mb
    differs = len(a) >= 2 and len(b) >= 2 and math.isfinite(diff) and abs(diff) > sa + sb
    return {
        "mean_a": ma,
        "sd_a": sa,
        "n_a": len(a),
        "mean_b": mb,
        "sd_b": sb,
        "n_b": len(b),
        "difference": diff,
        "differs": bool(differs),
        "direction": ("higher" if diff > 0 else "lower") if differs else "same",
    }


def pct(mean: float, sd: float) -> str:
    """``"71.3 ± 4.2 %"`` from fractions.

    >>> pct(0.7134, 0.0421)
    '71.3 ± 4.2 %'
    """
    if not math.isfinite(mean):
        return "nan"
    return f"{100 * mean:.1f} ± {100 * sd:.1f} %"


def describe(name_a: str, name_b: str, c: Dict) -> str:
    """One sentence: how ``name_a`` compares with ``name_b``, with the numbers.

    >>> describe("batch@every", "batch@first", compare([0.1, 0.12], [0.6, 0.7]))
    'batch@every is 54.0 points lower than batch@first (11.0 ± 1.4 % vs 65.0 ± 7.1 %)'
    """
    nums = f"({pct(c['mean_a'], c['sd_a'])} vs {pct(c['mean_b'], c['sd_b'])})"
    if not c["differs"]:
        return f"{name_a} and {name_b} do not differ by this rule {nums}"
    return (
        f"{name_a} is {100 * abs(c['difference']):.1f} points {c['direction']} than {name_b} {nums}"
    )
