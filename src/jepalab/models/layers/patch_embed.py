"""Image to patch tokens (Dosovitskiy et al. 2021, ViT, Sec. 3.1)."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


def to_2tuple(x: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    if len(x) != 2:
        raise ValueError(f"expected an int or a pair, got {x!r}")
    return (int(x[0]), int(x[1]))


def _linear_embed(patches: Tensor, proj: nn.Conv2d | nn.Conv3d) -> Tensor:
    """Apply a strided, non-overlapping convolution as one matrix product over patches.

    Same result as ``proj(x)``, but its weight gradient is a plain GEMM: oneDNN's convolution
    backward on CPU reduces over threads in a scheduling-dependent order, which broke
    bit-exact resume by one ulp in the patch weights under load.
    """
    return F.linear(patches, proj.weight.flatten(1), proj.bias)


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches, linearly embedded (a strided convolution's
    parameters, named ``proj`` as in timm, applied as a matrix product).

    ``(B, C, H, W)`` -> ``(B, N, D)`` with ``N = (H / p) * (W / p)`` in row-major order.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
    ) -> None:
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = patch_size
        if any(s % patch_size for s in self.img_size):
            raise ValueError(
                f"image size {self.img_size} is not divisible by patch size {patch_size}"
            )
        self.grid_size = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f"input of spatial size {tuple(x.shape[-2:])} does not match the encoder's "
                f"img_size {self.img_size}; set encoder.img_size to the data's image size"
            )
        return _linear_embed(self.patchify(x), self.proj)

    def patchify(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, N, C * p * p)`` raw pixels of every patch, token order."""
        p = self.patch_size
        return rearrange(x, "b c (h p) (w q) -> b (h w) (c p q)", p=p, q=p)


class TubeletEmbed(nn.Module):
    """Non-overlapping ``tubelet_size x patch_size x patch_size`` tubelets, embedded by a strided
    3-D convolution (ViViT, Arnab et al. 2021, Sec. 3.2; V-JEPA default 2 x 16 x 16).

    ``(B, C, T, H, W)`` -> ``(B, N, D)`` with ``N = (T / t) * (H / p) * (W / p)`` in
    ``(time, row, column)``-major order.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        num_frames: int = 16,
        tubelet_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 768,
    ) -> None:
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size, self.num_frames, self.tubelet_size = patch_size, num_frames, tubelet_size
        if any(s % patch_size for s in self.img_size):
            raise ValueError(
                f"image size {self.img_size} is not divisible by patch size {patch_size}"
            )
        if num_frames % tubelet_size:
            raise ValueError(
                f"num_frames={num_frames} is not divisible by tubelet_size={tubelet_size}"
            )
        self.grid_size = (
            num_frames // tubelet_size,
            self.img_size[0] // patch_size,
            self.img_size[1] // patch_size,
        )
        self.num_patches = self.grid_size[0] * self.grid_size[1] * self.grid_size[2]
        self.proj = nn.Conv3d(
            in_chans,
            embed_dim,
            kernel_size=(tubelet_size, patch_size, patch_size),
            stride=(tubelet_size, patch_size, patch_size),
        )

    def forward(self, x: Tensor) -> Tensor:
        expected = (self.num_frames, *self.img_size)
        if x.ndim != 5 or tuple(x.shape[-3:]) != expected:
            raise ValueError(
                f"expected clips (B, C, {expected[0]}, {expected[1]}, {expected[2]}), got "
                f"{tuple(x.shape)}; set encoder.num_frames / encoder.img_size to the data's"
            )
        return _linear_embed(self.patchify(x), self.proj)

    def patchify(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W)`` -> ``(B, N, C * t * p * p)`` raw pixels of every tubelet."""
        t, p = self.tubelet_size, self.patch_size
        return rearrange(x, "b c (t u) (h p) (w q) -> b (t h w) (c u p q)", u=t, p=p, q=p)
