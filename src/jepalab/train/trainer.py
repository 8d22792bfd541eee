"""The one training loop of jepalab, shared by every method.

The Trainer knows optimisers, schedules, devices, checkpoints and logs; it does not know
what a mask, an image or a target encoder is. A method maps a batch to a
:class:`~jepalab.methods.base.MethodOutput` and may update itself after each optimiser step.

Exact resume: the model, optimiser, step and RNG states are checkpointed atomically, the
schedules are functions of the step, and every data/mask random draw is a function of
``(seed, step, index)`` (see :mod:`jepalab.data.sampling`), so a run killed at any point
and resumed reproduces the uninterrupted run's losses bit for bit on the CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from jepalab.config import OptimConfig, TrainerConfig
from jepalab.data.sampling import ResumableBatchSampler, SeededDataset
from jepalab.eval.collapse import CollapseMonitor
from jepalab.methods.base import Method
from jepalab.train.checkpoint import (
    checkpoint_path,
    load_latest,
    prune_checkpoints,
    save_atomic,
)
from jepalab.train.metrics_log import MetricsLogger
from jepalab.train.optim import build_adamw
from jepalab.train.schedules import cosine, warmup_cosine

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "jepalab.train/1"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint on disk is still good."""


class BadDataError(RuntimeError):
    """Too many samples could not be read."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name!r} but CUDA is not available; use 'cpu'")
    return device


def move_to(obj: Any, device: torch.device) -> Any:
    """Move tensors inside ``obj`` (tensors, dataclasses, dicts, lists, ``.to`` objects)."""
    non_blocking = device.type == "cuda"
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: move_to(getattr(obj, f.name), device) for f in dataclasses.fields(obj)}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, dict):
        return {k: move_to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to(v, device) for v in obj)
    if hasattr(obj, "to"):
        return obj.to(device)
    return obj


class Trainer:
    """Trains a :class:`Method` on a dataset.

    Args:
        method: the objective and its modules.
        dataset: a map-style dataset of samples (e.g. ``(image, label)``).
        collate_fn: turns a list of ``(sample, SampleKey)`` into a batch (e.g. MaskCollator).
        batch_size: samples per step.
        cfg: loop settings (:class:`~jepalab.config.TrainerConfig`).
        optim: optimiser and schedules (:class:`~jepalab.config.OptimConfig`).
        run_dir: where checkpoints, metrics and the config go.
        num_workers: dataloader worker processes.
        run_config: the full resolved configuration, stored in checkpoints and wandb.
    """

    def __init__(
        self,
        method: Method,
        dataset: Dataset,
        collate_fn: Callable,
        batch_size: int,
        cfg: TrainerConfig,
        optim: OptimConfig,
        run_dir: str | Path,
        num_workers: int = 0,
        run_config: dict | None = None,
    ) -> None:
        self.cfg, self.optim_cfg = cfg, optim
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = resolve_device(cfg.device)
        self.dtype = self._autocast_dtype(cfg.precision)
        self.method = method.to(self.device)
        self.dataset, self.collate_fn = dataset, collate_fn
        self.batch_size, self.num_workers = batch_size, num_workers
        self.run_config = run_config
        num_samples = len(dataset)  # type: ignore[arg-type]
        self.steps_per_epoch = num_samples // batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"data.batch_size={batch_size} is larger than the dataset ({num_samples} samples)"
            )
        self.total_steps = max(1, math.ceil(cfg.epochs * self.steps_per_epoch))
        self.last_step = min(self.total_steps, cfg.max_steps or self.total_steps)
        self.warmup_steps = round(optim.warmup_epochs * self.steps_per_epoch)
        self.optimizer = build_adamw(
            self.method, optim.lr, optim.weight_decay, tuple(optim.betas), optim.eps
        )
        self.forward = torch.compile(self.method, dynamic=True) if cfg.compile else self.method
        if cfg.monitor_every < 0:
            raise ValueError(f"trainer.monitor_every must be >= 0, got {cfg.monitor_every}")
        self.monitor = CollapseMonitor(cfg.rank_warning)
        self.monitor_values: dict[str, float] = {}
        self.step = 0
        self.samples_seen = self.samples_skipped = 0

    # -- settings ---------------------------------------------------------------------------
    def _autocast_dtype(self, precision: str) -> torch.dtype | None:
        if precision == "auto":
            return torch.bfloat16 if self.device.type == "cuda" else None
        if precision == "fp32":
            return None
        if precision == "bf16":
            return torch.bfloat16
        raise ValueError(f"trainer.precision={precision!r}; use 'auto', 'fp32' or 'bf16'")

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def schedules(self, step: int) -> dict[str, float]:
        """Learning rate and weight decay at ``step``."""
        o = self.optim_cfg
        return {
            "lr": warmup_cosine(
                step, self.warmup_steps, self.total_steps, o.start_lr, o.lr, o.final_lr
            ),
            "wd": cosine(step, self.total_steps, o.weight_decay, o.final_weight_decay),
        }

    def _apply_schedules(self, values: dict[str, float]) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = values["lr"]
            if group.get("apply_wd", False):
                group["weight_decay"] = values["wd"]

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "total_steps": self.total_steps,
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "samples_seen": self.samples_seen,
            "samples_skipped": self.samples_skipped,
            "config": self.run_config,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a jepalab training checkpoint (format={state.get('format')})")
        if state["total_steps"] != self.total_steps:
            log.warning(
                "resuming a run planned for %d steps with a schedule of %d steps; the "
                "schedules change from here on",
                state["total_steps"],
                self.total_steps,
            )
        self.method.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.samples_seen = int(state.get("samples_seen", 0))
        self.samples_skipped = int(state.get("samples_skipped", 0))
        torch.set_rng_state(state["rng"]["torch"])
        py = random.getstate()
        random.setstate((py[0], tuple(state["rng"]["python"]), py[2]))
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    def save_checkpoint(self) -> Path:
        path = checkpoint_path(self.ckpt_dir, self.step)
        save_atomic(self.state_dict(), path)
        prune_checkpoints(self.ckpt_dir, self.cfg.keep_last)
        return path

    def maybe_resume(self) -> bool:
        """Load the newest checkpoint of the run directory if ``cfg.resume``."""
        if not self.cfg.resume:
            return False
        state = load_latest(self.ckpt_dir, map_location=self.device)
        if state is None:
            return False
        self.load_state_dict(state)
        log.info("resumed from step %d in %s", self.step, self.ckpt_dir)
        return True

    # -- the loop ---------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        sampler = ResumableBatchSampler(
            len(self.dataset), self.batch_size, self.cfg.seed, self.last_step, self.step
        )
        return DataLoader(
            SeededDataset(self.dataset, self.cfg.seed),
            batch_sampler=sampler,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # A private generator: creating the iterator must not consume the global RNG,
            # or a resumed run would draw different dropout/drop-path noise.
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def _check_data(self, skipped: int, seen: int) -> None:
        self.samples_skipped += skipped
        self.samples_seen += seen
        limit = self.cfg.max_bad_sample_fraction
        if self.samples_skipped and self.samples_skipped > limit * max(self.samples_seen, 100):
            raise BadDataError(
                f"{self.samples_skipped} of {self.samples_seen} samples could not be read "
                f"(limit trainer.max_bad_sample_fraction={limit}); the warnings above name "
                "the files"
            )

    def fit(self) -> list[float]:
        """Train until ``last_step``; returns the loss of every step run by this call."""
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        if self.cfg.seed is not None and self.step == 0:
            torch.manual_seed(self.cfg.seed)
            random.seed(self.cfg.seed)
        self.maybe_resume()
        logger = MetricsLogger(
            self.run_dir,
            self.cfg.wandb.mode,
            self.cfg.wandb.project,
            self.cfg.wandb.entity,
            self.run_config,
            self.run_dir.name,
        )
        logger.truncate_after(self.step)
        losses: list[float] = []
        if self.step >= self.last_step:
            logger.close()
            return losses
        self.method.train()
        bar = tqdm(
            total=self.last_step,
            initial=self.step,
            disable=not self.cfg.progress,
            desc=f"train {self.run_dir.name}",
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
        )
        window: dict[str, float] = {}
        window_steps, window_samples, window_start = 0, 0, time.perf_counter()
        try:
            for batch in self._loader():
                losses.append(self.train_step(batch, window))
                window_steps += 1
                window_samples += int(window.pop("_samples"))
                done = self.step == self.last_step
                if self.step % self.cfg.log_every == 0 or done:
                    elapsed = time.perf_counter() - window_start
                    row = {k: v / window_steps for k, v in window.items()}
                    row.update(
                        epoch=self.step / self.steps_per_epoch,
                        images_per_s=window_samples / max(elapsed, 1e-9),
                        skipped_samples=self.samples_skipped,
                    )
                    row.update(self.monitor_values)
                    self.monitor_values = {}
                    logger.log(self.step, row)
                    bar.set_postfix(
                        loss=f"{row['loss']:.4f}",
                        lr=f"{row['lr']:.2e}",
                        img_s=f"{row['images_per_s']:.0f}",
                    )
                    window.clear()
                    window_steps, window_samples = 0, 0
                    window_start = time.perf_counter()
                if self.monitor_values:  # a monitor step that is not a logging step
                    logger.log(self.step, self.monitor_values)
                    self.monitor_values = {}
                bar.update(1)
                if self.step % self.cfg.ckpt_every == 0 or done:
                    self.save_checkpoint()
        finally:
            bar.close()
            logger.close()
        return losses

    def train_step(self, batch: Any, window: dict[str, float]) -> float:
        """One optimiser step; accumulates logged scalars into ``window``."""
        self._check_data(getattr(batch, "skipped", 0), self.batch_size)
        values = self.schedules(self.step)
        self._apply_schedules(values)
        batch = move_to(batch, self.device)
        with self._autocast():
            out = self.forward(batch)
        loss = float(out.loss.detach())
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"loss is {loss} at step {self.step}; the last good checkpoint is in "
                f"{self.ckpt_dir} (lower optim.lr, or check the data)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if self.optim_cfg.clip_grad:
            values["grad_norm"] = float(
                nn.utils.clip_grad_norm_(self.method.parameters(), self.optim_cfg.clip_grad)
            )
        self.optimizer.step()
        self.step += 1
        values.update(self.method.after_optimizer_step(self.step, self.total_steps))
        values["loss"] = loss
        for k, v in out.metrics.items():
            values[k] = float(v)
        for k, v in values.items():
            window[k] = window.get(k, 0.0) + v
        window["_samples"] = out.num_samples
        every = self.cfg.monitor_every
        if every and out.monitor is not None and (self.step % every == 0 or self.step == 1):
            # this step's values (not window averages), logged at this step
            self.monitor_values = self.monitor(out.monitor, self.step)
        return loss
