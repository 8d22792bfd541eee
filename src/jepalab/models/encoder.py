"""What every registered encoder offers the rest of jepalab (ViT and ConvNeXt alike).

Methods, predictors, probes, FSDP and the checkpoint code read an encoder only through this
interface; ``tests/test_encoder_contract.py`` checks it on every :func:`list_encoders`
entry, so a new encoder family that passes it works everywhere an encoder is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from jepalab.ragged import Ragged


@runtime_checkable
class Encoder(Protocol):
    """A masked-input encoder of images ``(B, C, H, W)`` or clips ``(B, C, T, H, W)``.

    Attributes:
        grid_size: the token grid, ``(h, w)`` or ``(t, h, w)``; ``num_patches`` tokens.
        embed_dim: width of the output tokens.
        num_frames, tubelet_size: frames per clip and per token (1 and 1 for images).
        pos_embed_kind: ``"sincos"`` or ``"rope"``, the position scheme a predictor should
            follow by default.
        blocks: the repeated blocks, in order: each is one FSDP unit and one activation
            checkpoint.
    """

    grid_size: tuple[int, ...]
    num_patches: int
    embed_dim: int
    num_frames: int
    tubelet_size: int
    pos_embed_kind: str

    @property
    def blocks(self) -> Sequence[nn.Module]: ...

    def forward(self, x: Tensor, keep: Ragged | None = None) -> Tensor:
        """``(B, N, D)`` features of every token, or with ``keep`` (``k * B`` sequences of
        token indices) the ``(T, D)`` features of the kept tokens, each sequence encoded as
        its own masked copy of its sample: a token that is not kept has no influence."""
        ...

    def patchify(self, x: Tensor) -> Tensor:
        """``(B, N, pixels)``: the input cut into the token grid (raw-pixel baselines)."""
        ...

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them."""
        ...


def repeated_blocks(module: nn.Module) -> list[nn.Module]:
    """``module``'s own repeated blocks: an encoder's :attr:`Encoder.blocks`, a predictor's
    ``predictor_blocks``; empty for other modules."""
    for name in ("blocks", "predictor_blocks"):
        blocks = getattr(module, name, None)
        if isinstance(blocks, (nn.ModuleList, list, tuple)):
            return [b for b in blocks if isinstance(b, nn.Module)]
    return []


__all__ = ["Encoder", "repeated_blocks"]
