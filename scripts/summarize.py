"""Turn a Hydra multirun directory (or any directory of runs) into one table: the config keys
the sweep varied, then the final metrics of each run.

    jepalab train -m experiment=ijepa_digits mask.num_targets=1,2,4 name=ablate_targets
    python scripts/summarize.py multirun/ablate_targets            # markdown table
    python scripts/summarize.py multirun/ablate_targets --sort "probe/trained encoder" --desc
    python scripts/summarize.py runs/ --metrics '.*'               # every metric of every run

Metrics: the last logged value of each key in ``metrics.jsonl`` (loss, monitors), the probe
accuracies of ``probe.json`` and the numbers in ``eval/*.json``. ``--metrics`` takes regexes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    opts = parser.parse_args(argv)
    try:
        summary = summarize(opts.root, opts.metrics, opts.sort, opts.desc)
    except (FileNotFoundError, ValueError) as exc:
        print(f"summarize: {exc}", file=sys.stderr)
        return 2
    text = FORMATS[opts.format](summary)
    print(text)
    if opts.out is not None:
        opts.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
