"""Process groups for multi-process training: torchrun and SLURM, one code path.

A run is distributed when the environment says so. ``torchrun`` exports ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; a SLURM task (``srun``, or
Hydra's submitit launcher, which starts one task per GPU) exports ``SLURM_PROCID``,
``SLURM_NTASKS``, ``SLURM_LOCALID`` and ``SLURM_JOB_NODELIST``, from which the rendezvous is
derived: the first host of the node list, and a port from the job id, so every task of a job
(and every requeue of it) agrees without talking first. With one process nothing is
initialised and training runs exactly as before.

Backends: NCCL on CUDA, gloo on the CPU (what the tests use).
"""

from __future__ import annotations

import datetime
import logging
import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

MODES = ("auto", "off")
BACKENDS = ("auto", "nccl", "gloo")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the run.

    Attributes:
        rank: global rank, ``0 .. world_size - 1``.
        world_size: number of processes.
        local_rank: rank on this node (picks the GPU).
        initialized: whether this module created the default process group (and should
            destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs and progress bars."""
        return self.rank == 0


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compressed host list, e.g. ``"gpu[01-03,07],cpu5"`` -> ``["gpu01", "gpu02",
    "gpu03", "gpu07", "cpu5"]`` (zero padding kept, as ``scontrol show hostnames`` does)."""
    hosts: list[str] = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", nodelist):
        if plain:
            hosts.append(plain)
            continue
        for part in ranges.split(","):
            first, _, last = part.partition("-")
            if not last:
                hosts.append(prefix + first)
                continue
            width = len(first)
            hosts.extend(f"{prefix}{i:0{width}d}" for i in range(int(first), int(last) + 1))
    if not hosts:
        raise ValueError(f"cannot read the SLURM node list {nodelist!r}")
    return hosts


def _int_env(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def detect_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's or SLURM's variables, or ``None``
    for a single process. torchrun's variables win when both are set (``srun torchrun``).

    Under SLURM, also exports ``MASTER_ADDR``/``MASTER_PORT`` for the ``env://`` rendezvous
    when they are unset.
    """
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        world = _int_env("WORLD_SIZE")
        rank = _int_env("RANK")
        local = _int_env("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank
        return (rank, world, local) if world > 1 else None
    if "SLURM_NTASKS" in os.environ and "SLURM_PROCID" in os.environ:
        world = _int_env("SLURM_NTASKS")
        if world <= 1:
            return None
        rank = _int_env("SLURM_PROCID")
        local = _int_env("SLURM_LOCALID") if "SLURM_LOCALID" in os.environ else 0
        if "MASTER_ADDR" not in os.environ:
            nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
            if not nodelist:
                raise ValueError(
                    "SLURM_NTASKS > 1 but SLURM_JOB_NODELIST is unset; set MASTER_ADDR"
                )
            os.environ["MASTER_ADDR"] = expand_nodelist(nodelist)[0]
        if "MASTER_PORT" not in os.environ:
            job = int(os.environ.get("SLURM_JOB_ID", "0") or 0)
            os.environ["MASTER_PORT"] = str(20000 + job % 20000)
        return rank, world, local
    return None


def init_distributed(
    mode: str = "auto", backend: str = "auto", timeout_minutes: float = 30.0
) -> DistEnv:
    """Join (or create) the default process group as the environment describes.

    Args:
        mode: ``"auto"`` (distributed when torchrun/SLURM say there is more than one
            process) or ``"off"`` (always one process).
        backend: ``"auto"`` (NCCL when CUDA is available, else gloo), ``"nccl"``, ``"gloo"``.
        timeout_minutes: how long a collective may wait before the run fails.
    """
    if mode not in MODES:
        raise ValueError(f"trainer.distributed={mode!r} is not one of {MODES}")
    if backend not in BACKENDS:
        raise ValueError(f"trainer.dist_backend={backend!r} is not one of {BACKENDS}")
    if mode == "off":
        return DistEnv()
    if dist.is_available() and dist.is_initialized():  # e.g. a test or a user script
        world = dist.get_world_size()
        rank = dist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistEnv(rank, world, local, initialized=False)
    found = detect_env()
    if found is None:
        return DistEnv()
    rank, world, local = found
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("trainer.dist_backend=nccl needs CUDA; use gloo on the CPU")
        torch.cuda.set_device(local)
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(world))
    os.environ.setdefault("LOCAL_RANK", str(local))
    dist.init_process_group(
        backend,
        init_method="env://",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(minutes=timeout_minutes),
    )
    log.info("rank %d of %d (local %d), backend %s", rank, world, local, backend)
    return DistEnv(rank, world, local, initialized=True)


def shutdown(env: DistEnv) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if env.initialized and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.is_distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum of ``values`` over ranks (a copy; no gradient)."""
    if not env.is_distributed:
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects; small ones only)."""
    if not env.is_distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not env.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_module(module: torch.nn.Module, env: DistEnv) -> None:
    """Give every rank rank 0's parameters and buffers (in place)."""
    if not env.is_distributed:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)
