"""Seeds and intervals: runs that differ only in ``trainer.seed`` are one point of a sweep.

:func:`group_seeds` turns a :class:`~jepalab.eval.summary.Summary` into one row per setting
with, for every metric, the mean over seeds and its 95% confidence interval (Student's t,
``mean ± t_{0.975, n-1} · s / sqrt(n)``). :func:`ranking` orders the settings by a metric
and says, for each neighbouring pair, whether their intervals separate: a published ranking
is "reproduced" only when they do (docs/ablations.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jepalab.eval.summary import RunSummary, Summary, format_value

SEED_KEY = "trainer.seed"

# two-sided 95% quantiles of Student's t, t_{0.975, df}, df = 1 .. 30
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """``t_{0.975, df}``: the table up to 30 degrees of freedom, then the normal quantile with
    its first Cornish-Fisher correction (error < 1e-3)."""
    if df < 1:
        raise ValueError(f"a t interval needs at least 2 values (df >= 1), got df={df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df)


@dataclass
class Interval:
    """Mean over seeds and the half-width of its 95% interval (``nan`` for one seed)."""

    mean: float
    half_width: float
    values: list[float]

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def __str__(self) -> str:
        if math.isnan(self.half_width):
            return f"{format_value(self.mean)} (1 seed)"
        return f"{format_value(self.mean)} ± {format_value(self.half_width)}"


def interval(values: Sequence[float]) -> Interval:
    """The mean of ``values`` and its 95% Student-t interval."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, float("nan"), values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, t_quantile_975(n - 1) * sd / math.sqrt(n), values)


@dataclass
class SeedGroup:
    """One setting of a sweep: its config values (without the seed), its seeds and runs, and
    an :class:`Interval` per metric."""

    setting: dict[str, Any]
    seeds: list[Any]
    runs: list[str]
    metrics: dict[str, Interval] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={format_value(v)}" for k, v in self.setting.items()) or "(all runs)"


def group_seeds(summary: Summary, seed_key: str = SEED_KEY) -> list[SeedGroup]:
    """Group the runs of ``summary`` that differ only in ``seed_key``; metrics a run lacks
    (or that are not numbers) are left out of its group's intervals."""
    keys = [k for k in summary.config_columns if k != seed_key]
    groups: dict[str, SeedGroup] = {}
    members: dict[str, list[RunSummary]] = {}
    for run in summary.runs:
        setting = {k: run.config.get(k) for k in keys}
        ident = json.dumps(setting, sort_keys=True, default=str)
        group = groups.setdefault(ident, SeedGroup(setting, [], []))
        group.seeds.append(run.config.get(seed_key))
        group.runs.append(str(run.path))
        members.setdefault(ident, []).append(run)
    for ident, group in groups.items():
        for metric in summary.metric_columns:
            values = [r.metrics.get(metric) for r in members[ident]]
            numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            numbers = [v for v in numbers if not math.isnan(v)]
            if numbers:
                group.metrics[metric] = interval(numbers)
    return list(groups.values())


def add_difference(summary: Summary, metric: str, base: str) -> str:
    """Add ``metric - base`` to every run of ``summary`` that has both (e.g. the trained
    encoder's probe accuracy over the random-init encoder's of the same seed) and return
    its name. Differences within a seed cancel what the seed changes in both (the probe's
    split, the initialisation), so their interval is the tighter test of a ranking."""
    for key in (metric, base):
        if key not in summary.metric_columns:
            raise ValueError(f"no metric {key!r}; metrics: {summary.metric_columns}")
    name = f"{metric} - {base}"
    for run in summary.runs:
        a, b = run.metrics.get(metric), run.metrics.get(base)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            run.metrics[name] = float(a) - float(b)
    summary.metric_columns.append(name)
    return name


def ranking(groups: Sequence[SeedGroup], metric: str, higher_is_better: bool = True) -> str:
    """The settings ordered by ``metric``, each neighbouring pair marked ``>`` when the
    better one's interval lies entirely above the other's (separated) or ``≈`` when the
    intervals overlap (not separable at this budget)."""
    scored = [g for g in groups if metric in g.metrics]
    if not scored:
        raise ValueError(f"no group has the metric {metric!r}")
    sign = 1 if higher_is_better else -1
    scored.sort(key=lambda g: -sign * g.metrics[metric].mean)
    text = f"{scored[0].label} [{scored[0].metrics[metric]}]"
    for better, worse in zip(scored, scored[1:], strict=False):
        a, b = better.metrics[metric], worse.metrics[metric]
        separated = a.low > b.high if higher_is_better else a.high < b.low
        text += f" {'>' if separated else '≈'} {worse.label} [{b}]"
    return text


def format_seed_table(groups: Sequence[SeedGroup], metrics: Sequence[str]) -> str:
    """A markdown table: the setting, the number of seeds, ``mean ± 95% half-width`` per
    metric."""
    settings = list(groups[0].setting) if groups else []
    columns = [*settings, "seeds", *metrics]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for g in groups:
        cells = [format_value(g.setting[k]) for k in settings] + [str(len(g.seeds))]
        cells += [str(g.metrics[m]) if m in g.metrics else "–" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_json(groups: Sequence[SeedGroup]) -> str:
    return json.dumps(
        [
            {
                "setting": g.setting,
                "seeds": g.seeds,
                "runs": g.runs,
                "metrics": {
                    m: {"mean": i.mean, "ci95": i.half_width, "values": i.values}
                    for m, i in g.metrics.items()
                },
            }
            for g in groups
        ],
        indent=2,
        default=str,
    )


__all__ = [
    "SEED_KEY",
    "Interval",
    "SeedGroup",
    "add_difference",
    "format_seed_table",
    "group_seeds",
    "interval",
    "ranking",
    "seeds_json",
    "t_quantile_975",
]
