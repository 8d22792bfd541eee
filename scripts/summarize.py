"""Turn a Hydra multirun directory (or any directory of runs) into one table: the config keys
the sweep varied, then the final metrics of each run.

    jepalab train -m experiment=ijepa_digits mask.num_targets=1,2,4 name=ablate_targets
    python scripts/summarize.py multirun/ablate_targets            # markdown table
    python scripts/summarize.py multirun/ablate_targets --sort "probe/trained encoder" --desc
    python scripts/summarize.py runs/ --metrics '.*'               # every metric of every run

Metrics: the last logged value of each key in ``metrics.jsonl`` (loss, monitors), the probe
accuracies of ``probe.json`` and the numbers in ``eval/*.json``. ``--metrics`` takes regexes.

Seeds: ``--seeds`` groups the runs that differ only in ``trainer.seed`` and prints, per
setting, the mean and 95% interval of each metric; ``--rank METRIC`` orders the settings and
marks each neighbouring pair ``>`` (intervals separate) or ``≈`` (not separable);
``--paired BASE`` ranks by the per-run difference to another metric of the same run:

    jepalab train -m experiment=ijepa_digits mask.num_targets=1,4 trainer.seed=0,1,2
    python scripts/summarize.py multirun/DATE/TIME --seeds --rank "probe/trained encoder"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jepalab.eval.seeds import (
    add_difference,
    format_seed_table,
    group_seeds,
    ranking,
    seeds_json,
)
from jepalab.eval.summary import (
    DEFAULT_METRICS,
    format_csv,
    format_json,
    format_markdown,
    summarize,
)

FORMATS = {"md": format_markdown, "csv": format_csv, "json": format_json}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a multirun directory or a directory of runs")
    parser.add_argument("--format", choices=sorted(FORMATS), default="md")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        help="regexes over metric names to show (default: loss, RankMe, probe accuracies, "
        "surprise pairwise accuracy and AUROC)",
    )
    parser.add_argument("--sort", default=None, help="column to sort by")
    parser.add_argument("--desc", action="store_true", help="sort in descending order")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    parser.add_argument(
        "--seeds", action="store_true", help="one row per setting: mean ± 95%% interval over seeds"
    )
    parser.add_argument("--rank", default=None, help="with --seeds: order settings by a metric")
    parser.add_argument("--lower-is-better", action="store_true", help="for --rank (e.g. loss)")
    parser.add_argument(
        "--paired",
        default=None,
        metavar="BASE",
        help="with --rank: rank by METRIC - BASE of the same run (e.g. the random-init probe)",
    )
    opts = parser.parse_args(argv)
    try:
        summary = summarize(opts.root, opts.metrics, opts.sort, opts.desc)
        if opts.seeds:
            text = seed_text(summary, opts)
        elif opts.rank:
            raise ValueError("--rank needs --seeds")
        else:
            text = FORMATS[opts.format](summary)
    except (FileNotFoundError, ValueError) as exc:
        print(f"summarize: {exc}", file=sys.stderr)
        return 2
    print(text)
    if opts.out is not None:
        opts.out.write_text(text + "\n")
    return 0


def seed_text(summary, opts: argparse.Namespace) -> str:
    """The ``--seeds`` table (markdown, or JSON with every value), and the ``--rank`` line."""
    if opts.format == "csv":
        raise ValueError("--seeds prints md or json")
    rank = opts.rank
    if opts.paired:
        if not rank:
            raise ValueError("--paired needs --rank")
        rank = add_difference(summary, rank, opts.paired)
    groups = group_seeds(summary)
    metrics = [m for m in summary.metric_columns if m != "step"]
    text = seeds_json(groups) if opts.format == "json" else format_seed_table(groups, metrics)
    if rank:
        text += "\n\nranking: " + ranking(groups, rank, not opts.lower_is_better)
    return text


if __name__ == "__main__":
    sys.exit(main())
