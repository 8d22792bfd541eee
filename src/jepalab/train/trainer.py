"""The one training loop of jepalab, shared by every method.

The Trainer knows optimisers, schedules, devices, checkpoints and logs; it does not know
what a mask, an image or a target encoder is. A method maps a batch to a
:class:`~jepalab.methods.base.MethodOutput` and may update itself after each optimiser step.

Exact resume: the model, optimiser, step and RNG states are checkpointed atomically, the
schedules are functions of the step, and every data/mask random draw is a function of
``(seed, step, index)`` (see :mod:`jepalab.data.sampling`), so a run killed at any point
and resumed reproduces the uninterrupted run's losses bit for bit on the CPU.

Scale-out (:mod:`jepalab.train.distributed`): started by torchrun or SLURM with several
processes, the Trainer wraps the method in DDP. ``data.batch_size`` is the *global* batch of
a step; each process runs ``trainer.accum_steps`` micro-batches of
``batch_size / (processes * accum_steps)`` samples, and the step's loss is the sum of every
micro-batch's share of it (:attr:`~jepalab.methods.base.MethodOutput.loss_is_share`), so a run
gives the same parameters (to float rounding) on one process, on several, and with
accumulation. Rank 0 alone writes checkpoints, metrics and the progress bar; every rank's RNG
state is checkpointed, so a distributed run also resumes exactly.
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
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from jepalab.checkpoint import (
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_atomic,
)
from jepalab.config import OptimConfig, TrainerConfig
from jepalab.data.sampling import (
    ResumableBatchSampler,
    SeededDataset,
    micro_batch_size,
    mix_seed,
)
from jepalab.device import resolve_device
from jepalab.errors import CheckpointError, UserError
from jepalab.methods.base import Method
from jepalab.progress import progress_bar
from jepalab.specs import module_specs
from jepalab.train import distributed, fsdp
from jepalab.train.collapse import CollapseMonitor
from jepalab.train.metrics_log import MetricsLogger
from jepalab.train.optim import build_adamw
from jepalab.train.resume import check_resume, newest_state
from jepalab.train.schedules import cosine, warmup_cosine

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "jepalab.train/1"
STRATEGIES = ("ddp", "fsdp")


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or infinite; the last checkpoint on disk is still good."""


class BadDataError(UserError, RuntimeError):
    """Too many samples could not be read."""


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


def _has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


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

    The batch size is the global batch of one optimiser step (over every process and
    accumulation step; see the module docstring).
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
        if cfg.strategy not in STRATEGIES:
            raise ValueError(f"trainer.strategy={cfg.strategy!r} is not one of {STRATEGIES}")
        self.cfg, self.optim_cfg = cfg, optim
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.dist = distributed.init_distributed(cfg.distributed, cfg.dist_backend)
        self.accum_steps = cfg.accum_steps
        self.micro_batch_size = micro_batch_size(batch_size, self.dist.world_size, self.accum_steps)
        # each micro-batch's share of the step's global batch
        self.micro_fraction = 1.0 / (self.dist.world_size * self.accum_steps)
        self.device = resolve_device(cfg.device, self.dist.local_rank, key="trainer.device")
        self.dtype = self._autocast_dtype(cfg.precision)
        # what the models are (constructor calls), stored in every checkpoint (jepalab.specs)
        self.model_specs = module_specs(method)
        self._resume: dict | None | bool = False  # False: not read yet (see resume_state)
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
        if cfg.schedule_to_max_steps:  # the schedules (LR, WD, EMA) end where the run stops
            self.total_steps = self.last_step
        self.warmup_steps = round(optim.warmup_epochs * self.steps_per_epoch)
        if cfg.schedule_to_max_steps:  # the warmup never outlasts the shortened schedule
            self.warmup_steps = min(self.warmup_steps, self.total_steps)
        self.sharded = cfg.strategy == "fsdp" and self.dist.is_distributed
        if self.sharded:  # before the optimiser, which must hold the sharded parameters
            distributed.broadcast_module(self.method, self.dist)  # FSDP2 does not broadcast
            fsdp.shard_method(self.method)
        self.optimizer = build_adamw(
            self.method, optim.lr, optim.weight_decay, tuple(optim.betas), optim.eps
        )
        self.ddp: nn.parallel.DistributedDataParallel | None = None
        if self.dist.is_distributed and _has_batch_norm(self.method):
            # a pooled world-model latent is batch-standardised: statistics over the global
            # batch on GPUs; SyncBatchNorm has no CPU kernel, so gloo runs keep per-rank ones
            if self.device.type == "cuda":
                self.method = nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
            else:
                log.warning(
                    "BatchNorm statistics are per process on %s (SyncBatchNorm needs CUDA): "
                    "results differ slightly from one process with the same global batch",
                    self.device.type,
                )
        if self.dist.is_distributed and not self.sharded:
            # broadcasts rank 0's parameters and buffers (EMA target included) at wrap time
            self.ddp = nn.parallel.DistributedDataParallel(
                self.method,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # synced once at wrap time; never per forward: every rank updates alike
                forward_sync_buffers=False,
                find_unused_parameters=cfg.find_unused_parameters,
            )
        module = self.ddp if self.ddp is not None else self.method
        self.forward = torch.compile(module, dynamic=True) if cfg.compile else module
        if cfg.monitor_every < 0:
            raise ValueError(f"trainer.monitor_every must be >= 0, got {cfg.monitor_every}")
        self.monitor = CollapseMonitor(cfg.rank_warning)
        self.monitor_values: dict[str, float] = {}
        self.step = 0
        self.samples_seen = self.samples_skipped = 0
        self._rank_metrics: set[str] = set()  # the method's metrics: averaged over ranks

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
    def _local_state(self) -> dict:
        """What differs between ranks: RNG streams and data counters."""
        rng = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "rng": rng,
            "samples_seen": self.samples_seen,
            "samples_skipped": self.samples_skipped,
        }

    def state_dict(self) -> dict:
        """The checkpoint; in a distributed run every rank must call it (it gathers each
        rank's RNG state)."""
        ranks = distributed.all_gather_objects(self._local_state(), self.dist)
        if self.sharded:  # gathered in full: the checkpoint does not depend on the sharding
            model = fsdp.full_model_state(self.method)
            optimizer = fsdp.full_optimizer_state(self.method, self.optimizer)
        else:
            model, optimizer = self.method.state_dict(), self.optimizer.state_dict()
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "total_steps": self.total_steps,
            "model": model,
            "optimizer": optimizer,
            # "names": keyed by parameter name (FSDP); "ids": torch's per-group indices
            "optimizer_keys": "names" if self.sharded else "ids",
            **ranks[0],
            "config": self.run_config,
            "models": self.model_specs,
            # which submodule is the encoder, target encoder, predictor (Method docstring)
            "roles": dict(getattr(self.method, "checkpoint_roles", {})),
        }
        if self.dist.is_distributed:
            state["ranks"] = ranks
        return state

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
        try:
            if self.sharded:
                fsdp.load_full_model_state(self.method, state["model"])
            else:
                self.method.load_state_dict(state["model"])
        except RuntimeError as err:  # a model the recorded specs could not tell apart
            first = str(err).strip().splitlines()
            raise CheckpointError(
                f"the checkpoint of step {state.get('step')} in {self.ckpt_dir} does not fit "
                f"this model ({first[1].strip() if len(first) > 1 else first[0]}); use a new "
                "run_dir (or name=...)"
            ) from err
        if state.get("optimizer_keys", "ids") == "names":
            fsdp.load_full_optimizer_state(self.method, self.optimizer, state["optimizer"])
        elif self.sharded:
            raise ValueError(
                "this checkpoint's optimiser state is keyed by index (a DDP or one-process "
                "run); trainer.strategy=fsdp resumes only FSDP checkpoints -- resume with "
                "trainer.strategy=ddp"
            )
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        ranks = state.get("ranks") or [state]
        local = ranks[self.dist.rank] if len(ranks) == self.dist.world_size else None
        if local is None:
            log.warning(
                "the checkpoint was written by %d process(es), this run has %d: the data and "
                "masks are unchanged but dropout/drop-path noise will differ from the "
                "original run",
                len(ranks),
                self.dist.world_size,
            )
            local = ranks[0]
            self._seed_rank(mix_seed(self.cfg.seed, self.step))
        else:
            torch.set_rng_state(local["rng"]["torch"])
            py = random.getstate()
            random.setstate((py[0], tuple(local["rng"]["python"]), py[2]))
            if "cuda" in local["rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(local["rng"]["cuda"])
        self.samples_seen = int(local.get("samples_seen", 0))
        self.samples_skipped = int(local.get("samples_skipped", 0))

    def _seed_rank(self, seed: int) -> None:
        """Seed the global RNGs: ``seed`` on rank 0, a stream of its own on every other rank
        (dropout and drop path must not repeat the same pattern on every rank)."""
        if self.dist.rank:
            seed = mix_seed(seed, self.dist.rank)
        torch.manual_seed(seed)
        random.seed(seed)

    def save_checkpoint(self) -> Path:
        """Rank 0 writes (atomically), after every rank has handed over its RNG state."""
        path = checkpoint_path(self.ckpt_dir, self.step)
        state = self.state_dict()
        if self.dist.is_main:
            save_atomic(state, path)
            prune_checkpoints(self.ckpt_dir, self.cfg.keep_last)
        distributed.barrier(self.dist)
        return path

    def resume_state(self) -> dict | None:
        """On rank 0 with ``cfg.resume``: the newest readable checkpoint, read once and
        checked against the models before anything is written (a different model, or
        checkpoints that are all damaged, raise :class:`~jepalab.errors.CheckpointError`);
        ``None`` for a new run, on other ranks, or with ``resume=false``."""
        if not (self.cfg.resume and self.dist.is_main):
            return None
        if self._resume is False:
            state = newest_state(self.ckpt_dir)
            if state is not None:
                check_resume(state, self.model_specs, self.run_dir)
            self._resume = state
        return self._resume  # type: ignore[return-value]

    def maybe_resume(self) -> bool:
        """Load the newest checkpoint of the run directory if ``cfg.resume``. Rank 0 picks
        it (skipping unreadable files); every rank then loads that same step."""
        if not self.cfg.resume:
            return False
        state = self.resume_state()
        self._resume = False  # read again by a later fit(); the state is not kept
        step = distributed.broadcast_object(None if state is None else state["step"], self.dist)
        if step is None:
            return False
        if state is None:
            state = load_checkpoint(checkpoint_path(self.ckpt_dir, step), self.device)
        self.load_state_dict(state)
        log.info("resumed from step %d in %s", self.step, self.ckpt_dir)
        return True

    def close(self) -> None:
        """Leave the process group if this Trainer created it (after :meth:`fit`)."""
        distributed.shutdown(self.dist)

    # -- the loop ---------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        sampler = ResumableBatchSampler(
            len(self.dataset),
            self.batch_size,
            self.cfg.seed,
            self.last_step,
            self.step,
            self.dist.rank,
            self.dist.world_size,
            self.accum_steps,
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
        """Count a micro-batch's unreadable samples (the collator's ``skipped``: replaced by
        others or dropped) against ``trainer.max_bad_sample_fraction`` of the samples drawn
        (at least 100 counted, so one bad file early on does not stop a run)."""
        self.samples_skipped += skipped
        self.samples_seen += seen
        limit = self.cfg.max_bad_sample_fraction
        if self.samples_skipped and self.samples_skipped > limit * max(self.samples_seen, 100):
            raise BadDataError(
                f"step {self.step + 1}: {self.samples_skipped} unreadable samples for the "
                f"{self.samples_seen} drawn so far, above trainer.max_bad_sample_fraction="
                f"{limit}; the warnings above name the files"
            )

    def fit(self) -> list[float]:
        """Train until ``last_step``; returns the loss of every step run by this call (the
        global batch's loss, the same on every rank)."""
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        if self.cfg.seed is not None and self.step == 0:
            self._seed_rank(self.cfg.seed)
        self.maybe_resume()
        main = self.dist.is_main
        logger = None
        if main:
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
            log.warning(
                "%s already finished at step %d of %d: nothing to train (raise "
                "trainer.max_steps / epochs to continue it, or use a new run_dir, or "
                "trainer.resume=false to start over)",
                self.run_dir,
                self.step,
                self.last_step,
            )
            if logger is not None:
                logger.close()
            return losses
        self.method.train()
        # a bar on a terminal, a line every 5% of the run in a log file (jepalab.progress)
        bar = progress_bar(
            total=self.last_step,
            initial=self.step,
            enabled=self.cfg.progress and main,
            desc=f"train {self.run_dir.name}",
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
        )
        window: dict[str, float] = {}
        window_steps, window_samples, window_start = 0, 0, time.perf_counter()
        micro_batches: list[Any] = []
        try:
            for batch in self._loader():
                micro_batches.append(batch)
                if len(micro_batches) < self.accum_steps:
                    continue
                losses.append(self.train_step(micro_batches, window))
                micro_batches = []
                window_steps += 1
                window_samples += int(window.pop("_samples"))
                done = self.step == self.last_step
                if self.step % self.cfg.log_every == 0 or done:
                    elapsed = time.perf_counter() - window_start
                    row = self._reduce_window(window, window_steps)
                    row.update(
                        epoch=self.step / self.steps_per_epoch,
                        images_per_s=window_samples * self.dist.world_size / max(elapsed, 1e-9),
                        skipped_samples=self._global_skipped(),
                    )
                    row.update(self.monitor_values)
                    self.monitor_values = {}
                    if logger is not None:
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
                    if logger is not None:
                        logger.log(self.step, self.monitor_values)
                    self.monitor_values = {}
                bar.update(1)
                if self.step % self.cfg.ckpt_every == 0 or done:
                    self.save_checkpoint()
        finally:
            bar.close()
            if logger is not None:
                logger.close()
        return losses

    def _reduce_window(self, window: dict[str, float], steps: int) -> dict[str, float]:
        """Window means; the method's metrics (one value per rank) are averaged over ranks.
        The loss and the schedules are already the same on every rank."""
        row = {k: v / steps for k, v in window.items() if not k.startswith("_")}
        if self.dist.is_distributed:
            keys = sorted(k for k in row if k in self._rank_metrics)
            if keys:
                values = torch.tensor([row[k] for k in keys], dtype=torch.float64)
                values = distributed.all_reduce_sum(values.to(self.device), self.dist)
                values = values.cpu() / self.dist.world_size
                row.update(zip(keys, values.tolist(), strict=True))
        return row

    def _global_skipped(self) -> int:
        count = torch.tensor([self.samples_skipped], dtype=torch.float64, device=self.device)
        return int(distributed.all_reduce_sum(count, self.dist).item())

    def _global_value(self, value: Tensor) -> float:
        """A scalar summed over ranks (the loss of the global batch from each rank's share)."""
        if not self.dist.is_distributed:
            return float(value.detach())
        total = value.detach().double().reshape(1).to(self.device)
        return float(distributed.all_reduce_sum(total, self.dist).item())

    def _restart_point(self) -> str:
        """Where a restart of this run would resume from: its newest checkpoint on disk."""
        saved = list_checkpoints(self.ckpt_dir)
        if not saved:
            return f"no checkpoint is written yet ({self.ckpt_dir}): a restart begins at step 0"
        step, path = saved[-1]
        return f"the last checkpoint is {path} (step {step}); a restart resumes from there"

    def train_step(self, batches: list[Any], window: dict[str, float]) -> float:
        """One optimiser step over this process's micro-batches of the step (one, unless
        ``trainer.accum_steps > 1``); accumulates logged scalars into ``window``.

        Each micro-batch's loss share is backpropagated as it comes (gradients add up);
        DDP all-reduces the gradients once, on the last micro-batch. Returns the loss of the
        global batch.
        """
        values = self.schedules(self.step)
        self._apply_schedules(values)
        self.optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over ranks while the shares add up: undo the average
        backward_scale = float(self.dist.world_size)
        loss, metrics, num_samples, monitor = 0.0, {}, 0, None
        for index, batch in enumerate(batches):
            self._check_data(getattr(batch, "skipped", 0), self.micro_batch_size)
            batch = move_to(batch, self.device)
            last = index == len(batches) - 1
            sync = contextlib.nullcontext()
            if self.ddp is not None and not last:
                sync = self.ddp.no_sync()
            if self.sharded:  # reduce-scatter the gradients on the last micro-batch only
                self.method.set_requires_gradient_sync(last)
            with sync:
                with self._autocast():
                    out = self.forward(batch)
                share = out.loss if out.loss_is_share else out.loss * self.micro_fraction
                part = self._global_value(share)  # every rank sees a NaN of any rank
                if not math.isfinite(part):
                    raise NonFiniteLossError(
                        f"loss is {part} at step {self.step}; {self._restart_point()} "
                        "(lower optim.lr, or check the data)"
                    )
                (share * backward_scale if backward_scale != 1.0 else share).backward()
            loss += part
            for k, v in out.metrics.items():
                metrics[k] = metrics.get(k, 0.0) + float(v) / len(batches)
            num_samples += out.num_samples
            if monitor is None:
                monitor = out.monitor
        if self.optim_cfg.clip_grad:
            norm = nn.utils.clip_grad_norm_(self.method.parameters(), self.optim_cfg.clip_grad)
            values["grad_norm"] = float(fsdp.local_value(norm))
        self.optimizer.step()
        self.step += 1
        values.update(self.method.after_optimizer_step(self.step, self.total_steps))
        values["loss"] = loss
        self._rank_metrics.update(metrics)
        values.update(metrics)
        for k, v in values.items():
            window[k] = window.get(k, 0.0) + v
        window["_samples"] = num_samples
        every = self.cfg.monitor_every
        if (
            every
            and self.dist.is_main
            and monitor is not None
            and (self.step % every == 0 or self.step == 1)
        ):
            # this step's values (not window averages), logged at this step; in a distributed
            # run, of rank 0's first micro-batch
            self.monitor_values = self.monitor(monitor, self.step)
        return loss
