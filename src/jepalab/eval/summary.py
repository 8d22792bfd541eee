"""Summaries of many runs: a Hydra multirun sweep as one table (config differences × results).

Every run directory written by ``jepalab train`` holds ``config.json`` (the resolved config),
``metrics.jsonl`` (one row per logged step) and, after evaluation, ``probe.json`` and
``eval/*.json``. :func:`summarize` finds the runs under a directory, keeps the config keys
whose values differ between runs (what the sweep varied) and the final metrics, and
:func:`format_markdown` / :func:`format_csv` print them. ``scripts/summarize.py`` is the
command line.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# config keys that differ between runs without being part of what a sweep varies
IGNORED_KEYS = ("run_dir", "name")
# final-metric columns kept by default (regex over the flattened metric names)
DEFAULT_METRICS = (
    r"^loss$",
    r"^monitor/rankme$",
    r"^probe/trained encoder$",
    r"test_accuracy$",
    r"pairwise_accuracy$",
    r"auroc$",
)


@dataclass
class RunSummary:
    """One run: where it is, its flattened config and its final metrics."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}``; lists are leaves."""
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("skipping unreadable %s (%s)", path, exc)
        return None


def final_training_metrics(metrics_file: Path) -> dict[str, Any]:
    """The last logged value of every metric in ``metrics.jsonl`` (monitors are logged
    less often than the loss, so each key takes its own last row), plus ``step``."""
    last: dict[str, Any] = {}
    if not metrics_file.is_file():
        return last
    for line in metrics_file.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s: skipping a damaged line", metrics_file)
            continue
        last.update(row)
    return last


def evaluation_metrics(run_dir: Path) -> dict[str, Any]:
    """Numbers from the run's evaluations: ``probe.json`` (written by ``jepalab train``) as
    ``probe/<features>`` = test accuracy, and every ``eval/*.json`` flattened under its stem
    (``probe.<...>``, ``surprise.<...>``)."""
    out: dict[str, Any] = {}
    probe = _read_json(run_dir / "probe.json") if (run_dir / "probe.json").is_file() else None
    if isinstance(probe, dict):
        for name, result in probe.items():
            if isinstance(result, dict) and "test_accuracy" in result:
                out[f"probe/{name}"] = result["test_accuracy"]
    for file in sorted((run_dir / "eval").glob("*.json")):
        data = _read_json(file)
        if isinstance(data, dict):
            for key, value in flatten(data, f"{file.stem}.").items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[key] = value
    return out


def find_runs(root: Path) -> list[Path]:
    """Run directories (holding ``config.json``) under ``root``, in job order (``0, 1, ...,
    10``, not ``0, 1, 10``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such directory: {root}")
    runs = {p.parent for p in root.rglob("config.json") if p.parent.name != "eval"}

    def natural(path: Path) -> list:
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]

    return sorted(runs, key=natural)


def load_run_summary(run_dir: Path) -> RunSummary:
    config = _read_json(run_dir / "config.json") or {}
    metrics = final_training_metrics(run_dir / "metrics.jsonl")
    metrics.update(evaluation_metrics(run_dir))
    return RunSummary(run_dir, flatten(config), metrics)


def varying_keys(configs: Sequence[dict[str, Any]], ignore: Iterable[str] = IGNORED_KEYS) -> list:
    """Config keys whose value is not the same in every run (missing counts as a value)."""
    ignore = set(ignore)
    keys = sorted({k for c in configs for k in c} - ignore)
    missing = object()
    return [
        k
        for k in keys
        if len({json.dumps(c.get(k, missing), default=str, sort_keys=True) for c in configs}) > 1
    ]


@dataclass
class Summary:
    """A table: one row per run, config columns then metric columns."""

    runs: list[RunSummary]
    config_columns: list[str]
    metric_columns: list[str]

    def rows(self) -> list[dict[str, Any]]:
        table = []
        for run in self.runs:
            row: dict[str, Any] = {"run": run.path.name}
            row.update({k: run.config.get(k) for k in self.config_columns})
            row.update({k: run.metrics.get(k) for k in self.metric_columns})
            table.append(row)
        return table


def summarize(
    root: str | Path,
    metrics: Sequence[str] = DEFAULT_METRICS,
    sort_by: str | None = None,
    descending: bool = False,
) -> Summary:
    """Summarise every run under ``root`` (a Hydra multirun directory or any directory of
    runs).

    Args:
        metrics: regexes selecting metric columns (default :data:`DEFAULT_METRICS`; ``".*"``:
            every metric).
        sort_by: a column to sort the rows by (runs without it go last).
    """
    paths = find_runs(Path(root))
    if not paths:
        raise FileNotFoundError(f"no run directories (with config.json) under {root}")
    runs = [load_run_summary(p) for p in paths]
    config_columns = varying_keys([r.config for r in runs])
    patterns = [re.compile(m) for m in metrics]
    names = sorted({k for r in runs for k in r.metrics})
    metric_columns = [n for n in names if any(p.search(n) for p in patterns)]
    if "step" in names and "step" not in metric_columns:
        metric_columns.insert(0, "step")
    summary = Summary(runs, config_columns, metric_columns)
    if sort_by is not None:
        columns = ["run", *config_columns, *metric_columns]
        if sort_by not in columns:
            raise ValueError(f"cannot sort by {sort_by!r}; columns: {columns}")

        def key(run: RunSummary):
            value = run.metrics.get(sort_by, run.config.get(sort_by))
            if sort_by == "run":
                value = run.path.name
            absent = value is None or (isinstance(value, float) and math.isnan(value))
            return (absent, (-value if descending else value) if not absent else 0)

        summary.runs.sort(key=key)
    return summary


def format_value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if 0 < abs(value) < 1e-3 or abs(value) >= 1e5:
            return f"{value:.3g}"
        return f"{value:.4f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def format_markdown(summary: Summary) -> str:
    """A GitHub-markdown table."""
    rows = summary.rows()
    columns = list(rows[0]) if rows else ["run"]
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(format_value(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def format_csv(summary: Summary) -> str:
    rows = summary.rows()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["run"])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    return buffer.getvalue()


def format_json(summary: Summary) -> str:
    return json.dumps(
        {
            "config_columns": summary.config_columns,
            "metric_columns": summary.metric_columns,
            "rows": [
                {**row, "path": str(r.path)}
                for row, r in zip(summary.rows(), summary.runs, strict=True)
            ],
        },
        indent=2,
        default=str,
    )
