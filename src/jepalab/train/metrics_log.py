"""Metrics sinks: a local JSONL file (always) and Weights & Biases (``mode`` by config)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends one JSON object per logging step to ``run_dir/metrics.jsonl``; mirrors to wandb.

    Args:
        run_dir: run directory.
        wandb_mode: ``"disabled"`` (default), ``"offline"`` or ``"online"``.
        wandb_project, wandb_entity: where wandb logs go.
        config: the resolved run configuration (stored by wandb).
        run_name: the run's name.
    """

    def __init__(
        self,
        run_dir: Path,
        wandb_mode: str = "disabled",
        wandb_project: str = "jepalab",
        wandb_entity: str | None = None,
        config: dict | None = None,
        run_name: str | None = None,
    ) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wandb = None
        if wandb_mode not in ("disabled", "offline", "online"):
            raise ValueError(
                f"trainer.wandb.mode={wandb_mode!r}; use 'disabled', 'offline' or 'online'"
            )
        if wandb_mode != "disabled":
            import wandb

            self._wandb = wandb.init(
                project=wandb_project,
                entity=wandb_entity,
                mode=wandb_mode,
                config=config,
                name=run_name,
                dir=str(run_dir),
                resume="allow",
            )

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, **{k: _scalar(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._wandb is not None:
            self._wandb.log(row, step=step)

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (a resumed run re-logs them)."""
        if not self.path.exists():
            return
        rows = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if json.loads(r).get("step", 0) <= step]
        self.path.write_text("".join(r + "\n" for r in kept))

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()


def _scalar(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
