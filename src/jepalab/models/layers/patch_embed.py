"""Image to patch tokens (Dosovitskiy et al. 2021, ViT, Sec. 3.1)."""

from __future__ import annotations

from torch import Tensor, nn


def to_2tuple(x: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    if len(x) != 2:
        raise ValueError(f"expected an int or a pair, got {x!r}")
    return (int(x[0]), int(x[1]))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches, linearly embedded by a strided convolution.

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
        return self.proj(x).flatten(2).transpose(1, 2)
