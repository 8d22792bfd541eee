"""Which jepalab model a checkpoint fits, read off its tensor shapes (jepalab key names).

Widths, depths, patch and tubelet sizes, MLP ratio, mask-token and action dimensions are in
the shapes; the grid is in a sincos table when there is one. Heads are *not* in the weights
(``qkv`` is ``(3 D, D)`` for any head count): they come from the official layout's
architecture table or from the model being loaded. The result is a ready-to-paste call.
"""

from __future__ import annotations

import math
import re
from typing import Any

from torch import Tensor

from jepalab.models.vit import VIT_SIZES

_COMMON_IMG = (224, 256, 384, 448, 512, 320, 288, 192, 160, 128, 96, 64, 32)


def _depth(state_dict: dict[str, Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}\.(\d+)\.")
    ids = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    return max(ids) + 1 if ids else 0


def _grid(num: int, patch: int, video: bool, img_hint: int | None) -> tuple[int, int]:
    """``(image side, time steps)`` of a square grid of ``num`` tokens (time steps 1 for
    images), trying the model's image size first, then common ones."""
    if not video:
        side = math.isqrt(num)
        return (side * patch, 1) if side * side == num else (0, 0)
    for img in ((img_hint,) if img_hint else ()) + _COMMON_IMG:
        cells = (img // patch) ** 2
        if img % patch == 0 and cells and num % cells == 0:
            return img, num // cells
    return 0, 0


def _fmt(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def encoder_config(
    state_dict: dict[str, Tensor],
    layout_kwargs: dict[str, Any] | None = None,
    num_heads: int | None = None,
    img_size: int | None = None,
    num_frames: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """``(registered name, keyword arguments)`` of a :class:`VisionTransformer` that fits.

    ``num_heads`` / ``img_size`` / ``num_frames`` are used where the weights say nothing
    (heads; the grid of a RoPE encoder, which has no table).
    """
    proj = state_dict["patch_embed.proj.weight"]
    embed_dim, in_chans, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    video = proj.ndim == 5
    depth = _depth(state_dict, "blocks")
    size = next(
        (n for n, s in VIT_SIZES.items() if (s["embed_dim"], s["depth"]) == (embed_dim, depth)),
        None,
    )
    name = f"vit_{size or 'base'}_patch{patch if patch in (14, 16) else 16}"
    kwargs: dict[str, Any] = {}
    if size is None:
        kwargs.update(embed_dim=embed_dim, depth=depth)
    if patch not in (14, 16):
        kwargs["patch_size"] = patch
    default_heads = VIT_SIZES[size]["num_heads"] if size else None
    if num_heads is not None and embed_dim % num_heads:
        num_heads = None  # the hint (the model's heads) cannot split this width
    if num_heads is not None and num_heads != default_heads:
        kwargs["num_heads"] = num_heads
    mlp_ratio = state_dict["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim if depth else 4.0
    default_mlp = VIT_SIZES[size].get("mlp_ratio", 4.0) if size else 4.0
    if int(embed_dim * default_mlp) != int(embed_dim * mlp_ratio):
        kwargs["mlp_ratio"] = mlp_ratio
    if in_chans != 3:
        kwargs["in_chans"] = in_chans
    if depth and "blocks.0.attn.qkv.bias" not in state_dict:
        kwargs["qkv_bias"] = False
    img, steps = img_size, None
    if "pos_embed" in state_dict:
        found_img, steps = _grid(state_dict["pos_embed"].shape[1], patch, video, img_size)
        img = found_img or img
    if img:
        kwargs["img_size"] = img
    if video:
        tubelet = proj.shape[2]
        kwargs["num_frames"] = steps * tubelet if steps else (num_frames or 16)
        kwargs["tubelet_size"] = tubelet
    kwargs.update(layout_kwargs or {})
    return name, kwargs


def masked_predictor_config(
    state_dict: dict[str, Tensor],
    layout_kwargs: dict[str, Any] | None = None,
    num_heads: int | None = None,
    grid_size: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``masked_vit_predictor`` that fit (``grid_size`` from the model
    where the checkpoint has no table, i.e. RoPE)."""
    embed = state_dict["predictor_embed.weight"]
    kwargs: dict[str, Any] = {
        "grid_size": grid_size,
        "encoder_dim": embed.shape[1],
        "embed_dim": embed.shape[0],
        "depth": _depth(state_dict, "predictor_blocks"),
        "num_heads": num_heads if num_heads and not embed.shape[0] % num_heads else None,
        "num_mask_tokens": state_dict["mask_tokens"].shape[0] if "mask_tokens" in state_dict else 1,
    }
    table = state_dict.get("predictor_pos_embed")
    if table is not None and grid_size is not None and math.prod(grid_size) != table.shape[1]:
        kwargs["grid_size"] = f"<a grid of {table.shape[1]} tokens>"
    kwargs.update(layout_kwargs or {})
    return kwargs


def action_predictor_config(
    state_dict: dict[str, Tensor],
    layout_kwargs: dict[str, Any] | None = None,
    num_heads: int | None = None,
    grid_size: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``action_predictor`` that fit."""
    embed, action = state_dict["predictor_embed.weight"], state_dict["action_encoder.weight"]
    kwargs: dict[str, Any] = {
        "grid_size": grid_size,
        "encoder_dim": embed.shape[1],
        "action_dim": action.shape[1],
        "state_dim": state_dict["state_encoder.weight"].shape[1]
        if "state_encoder.weight" in state_dict
        else 0,
        "embed_dim": embed.shape[0],
        "depth": _depth(state_dict, "predictor_blocks"),
        "num_heads": num_heads if num_heads and not embed.shape[0] % num_heads else None,
    }
    if "extrinsics_encoder.weight" in state_dict:
        kwargs["extrinsics_dim"] = state_dict["extrinsics_encoder.weight"].shape[1]
    kwargs.update(layout_kwargs or {})
    return kwargs


def _size_and_patch(name: str) -> tuple[str, int]:
    size, patch = name.removeprefix("vit_").rsplit("_patch", 1)
    return size, int(patch)


def heads_of(name: str, kwargs: dict[str, Any]) -> int | None:
    """Heads of the encoder ``create_encoder(name, **kwargs)`` would build."""
    if "num_heads" in kwargs:
        return int(kwargs["num_heads"])
    size = VIT_SIZES.get(_size_and_patch(name)[0])
    return int(size["num_heads"]) if size else None


def grid_of(name: str, kwargs: dict[str, Any]) -> tuple[int, ...]:
    """Token grid of the encoder ``create_encoder(name, **kwargs)`` would build."""
    patch = kwargs.get("patch_size", _size_and_patch(name)[1])
    side = kwargs.get("img_size", 224) // patch
    if kwargs.get("num_frames", 1) > 1:
        return (kwargs["num_frames"] // kwargs.get("tubelet_size", 2), side, side)
    return (side, side)


_HEADS_NOTE = " (head counts are not stored in the weights: check num_heads)"


def encoder_call(name: str, kwargs: dict[str, Any]) -> str:
    return f"create_encoder({name!r}, {_fmt(kwargs)})" + _HEADS_NOTE


def predictor_call(name: str, kwargs: dict[str, Any]) -> str:
    return f"create_predictor({name!r}, {_fmt(kwargs)})" + _HEADS_NOTE


__all__ = [
    "action_predictor_config",
    "encoder_call",
    "encoder_config",
    "grid_of",
    "heads_of",
    "masked_predictor_config",
    "predictor_call",
]
