"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for models too large for DDP.

DDP keeps a full copy of the parameters, gradients and AdamW moments on every GPU; FSDP2
shards them over the ranks and all-gathers one block's parameters just before it runs. Every
repeated block of an encoder (:class:`~jepalab.models.encoder.Encoder` ``blocks``: transformer
or ConvNeXt blocks) and of a predictor is its own unit; the method is the root unit holding the
rest (embeddings, norms, mask tokens). The EMA target encoder is sharded exactly like the
context encoder, so its update (``torch._foreach_lerp_``) pairs local shards with local
shards and never communicates.

Checkpoints stay in the one on-disk format: full (unsharded) state dicts gathered to rank 0,
the optimiser state keyed by parameter name (``torch.distributed.checkpoint.state_dict``),
so an FSDP run resumes on any number of processes, with or without FSDP.
"""

from __future__ import annotations

from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.optim import Optimizer

from jepalab.models.encoder import repeated_blocks

# full (unsharded) tensors on the CPU of every rank; rank 0 writes them
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard_method(method: nn.Module) -> nn.Module:
    """Shard ``method`` in place: one FSDP unit per block (the repeated blocks of every
    encoder and predictor, :func:`~jepalab.models.encoder.repeated_blocks`), the method as
    the root unit."""
    found = {id(b): b for m in method.modules() for b in repeated_blocks(m)}
    blocks = list(found.values())
    if not blocks:
        raise ValueError(
            f"trainer.strategy=fsdp found no transformer or ConvNeXt block in "
            f"{type(method).__name__} to shard"
        )
    for block in blocks:
        fully_shard(block)
    fully_shard(method)
    return method


def full_model_state(method: nn.Module) -> dict:
    """The unsharded state dict (a collective: every rank calls it)."""
    return get_model_state_dict(method, options=_FULL)


def full_optimizer_state(method: nn.Module, optimizer: Optimizer) -> dict:
    """The optimiser state keyed by parameter name, unsharded (a collective)."""
    return get_optimizer_state_dict(method, optimizer, options=_FULL)


def load_full_model_state(method: nn.Module, state: dict) -> None:
    set_model_state_dict(method, state, options=StateDictOptions(full_state_dict=True))


def load_full_optimizer_state(method: nn.Module, optimizer: Optimizer, state: dict) -> None:
    set_optimizer_state_dict(
        method, optimizer, state, options=StateDictOptions(full_state_dict=True)
    )


def local_value(value):
    """A DTensor reduced to a plain tensor (e.g. the gradient norm of sharded gradients)."""
    return value.full_tensor() if isinstance(value, DTensor) else value
