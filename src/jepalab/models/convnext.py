"""ConvNeXt encoders (Liu et al. 2022, "A ConvNet for the 2020s"; Woo et al. 2023, "ConvNeXt V2",
Sec. 3.2 GRN) as masked JEPA context encoders, for images (I-JEPA) and videos (V-JEPA).

Interchangeable with :class:`~jepalab.models.vit.VisionTransformer`: ``encoder(x)`` returns
``(B, N, D)`` features of a token grid, ``encoder(x, keep)`` the ``(T, D)`` packed features of
the visible tokens, and the grid (``grid_size``) is the grid the mask collators draw blocks on.

**The token grid.** ``patch_size`` is the stride of the output grid (the "patch" of the mask
collator). A stock ConvNeXt has a stride-4 stem and three stride-2 downsamplings (stride 32,
timm's layout; only this stride loads timm weights unchanged). A smaller stride keeps the
stages at higher resolution: the stem stride is ``min(4, patch_size)`` and only as many stage
transitions downsample as are needed to reach ``patch_size``; the others change the width
with a 1x1 convolution. Stride 16 gives ViT-B/16's 14 x 14 grid at 224 px.

**No information leak from masked tokens** (SparK, Tian et al. 2023; ConvNeXt V2's FCMAE,
Woo et al. 2023, Sec. 3.1, which use sparse convolutions to the same end). With a mask, the
network runs densely but masked positions are held at exactly zero wherever an operator mixes
positions: the input pixels of masked tokens are zeroed, and the mask (upsampled to the
current resolution) is re-applied after the stem, after every downsampling, before GRN (its
L2 norm over positions then covers visible positions only) and at the end of every block
(so every depthwise convolution reads zeros at masked positions). LayerNorm, the MLP and
the layer scale act per position. Within a token cell all positions share the mask value, so
a stride-2 downsampling never merges visible and masked positions. Visible outputs are thus
a function of visible pixels only, bit for bit (``tests/test_convnext.py``).

**Video** (V-JEPA): a tubelet stem (``tubelet_size x s x s`` convolution, ViViT's tubelet
embedding) gives the same ``(T / t) x (H / p) x (W / p)`` grid as the video ViT, the
depthwise convolutions become ``temporal_kernel x 7 x 7`` (spatio-temporal mixing in every
block, as in the 3-D ConvNeXts of video recognition) and downsampling is spatial only, so
every stage keeps the tubelet time axis. ``docs/convnext.md`` explains the choice.

**Bit-reproducible on CPU.** The stem and the downsamplings (kernel = stride) run as matrix
products over non-overlapping patches (:class:`PatchConv2d`), like the ViT's patch embedding:
oneDNN's convolution weight gradient changes with the thread count (by ~1e-6 relative for
the Atto stem at 64 px). The depthwise convolutions stay oneDNN's: their results are the same
for 1 and 2 threads (``tests/test_convnext.py`` checks every convolution of the encoder).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from jepalab.models.layers import drop_path, drop_path_rates
from jepalab.models.layers.patch_embed import to_2tuple
from jepalab.models.registry import register_encoder
from jepalab.ragged import Ragged
from jepalab.specs import records_arguments

log = logging.getLogger(__name__)

# Widths and depths per stage (Liu et al. 2022 Tab. 1 for tiny/small/base; timm's and
# ConvNeXt V2's atto/femto/pico/nano, Woo et al. 2023 Tab. 7).
CONVNEXT_SIZES: dict[str, dict[str, tuple[int, ...]]] = {
    "atto": dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320)),
    "femto": dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384)),
    "pico": dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512)),
    "nano": dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640)),
    "tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
}
NORM_EPS = 1e-6  # timm's LayerNorm / LayerNorm2d default for ConvNeXt
STEM_STRIDE = 4  # the "patchify" stem of ConvNeXt (Liu et al. 2022, Sec. 2.2)


class _PatchConv:
    """A convolution whose kernel equals its stride, applied as one matrix product over the
    non-overlapping patches (the GEMM form of :mod:`jepalab.models.layers.patch_embed`).

    Same parameters, names and result (to float rounding) as the convolution, but its weight
    gradient is a plain GEMM, bit-identical for any thread count; oneDNN's convolution
    backward is not. ``(B, C, [T,] H, W)`` -> ``(B, D, [T / t,] H / p, W / p)``, channels
    first (a channels-last view: the LayerNorm that follows reads it without a copy).
    """

    weight: Tensor
    bias: Tensor | None
    kernel_size: tuple[int, ...]

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 5:
            blocks, grid, kernel = "(t u) (h p) (w q)", "t h w", "u p q"
        else:
            blocks, grid, kernel = "(h p) (w q)", "h w", "p q"
        sizes = dict(zip(kernel.split(), self.kernel_size, strict=True))
        weight = self.weight
        if x.movedim(1, -1).is_contiguous():  # channels-last memory (after a LayerNorm):
            # patches in (kernel, channel) order gather whole pixels, 2x faster (Atto, 56x56)
            x, weight = x.movedim(1, -1), weight.movedim(1, -1)
            patches = rearrange(x, f"b {blocks} c -> b {grid} ({kernel} c)", **sizes)
        else:
            patches = rearrange(x, f"b c {blocks} -> b {grid} (c {kernel})", **sizes)
        return F.linear(patches, weight.flatten(1), self.bias).movedim(-1, 1)


class PatchConv2d(_PatchConv, nn.Conv2d):
    """``nn.Conv2d(in, out, k, stride=k)`` as a matrix product (see :class:`_PatchConv`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=kernel_size)


class PatchConv3d(_PatchConv, nn.Conv3d):
    """``nn.Conv3d(in, out, k, stride=k)`` as a matrix product (see :class:`_PatchConv`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, ...]) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=kernel_size)


class ChannelsLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a channels-first ``(B, C, *spatial)`` tensor (timm's
    ``LayerNorm2d``), for the stem and the downsampling layers."""

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.movedim(1, -1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.movedim(-1, 1)


class GlobalResponseNorm(nn.Module):
    """GRN (Woo et al. 2023, Eq. 1-3) on channels-last ``(B, *spatial, C)`` features.

    ``x + bias + weight * x * N(G(x))`` with ``G`` the per-channel L2 norm over all positions
    and ``N`` its ratio to the channel mean. Under a mask the caller zeroes masked positions
    first, so ``G`` is the norm over visible positions only.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        spatial = tuple(range(1, x.ndim - 1))
        gx = x.norm(p=2, dim=spatial, keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        return x + torch.addcmul(self.bias, self.weight, x * nx)


class ConvNeXtMlp(nn.Module):
    """Inverted-bottleneck MLP of a ConvNeXt block (``fc1, act, [grn], fc2``; timm names)."""

    def __init__(self, dim: int, hidden: int, use_grn: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.grn = GlobalResponseNorm(hidden) if use_grn else None
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.act(self.fc1(x))
        if self.grn is not None:
            x = self.grn(x if mask is None else x * mask)
        return self.fc2(x)


class ConvNeXtBlock(nn.Module):
    """``x + drop_path(gamma * MLP(LN(dwconv(x))))`` (Liu et al. 2022, Fig. 4).

    Args:
        dim: channels.
        drop_path: stochastic-depth rate of this block.
        layer_scale: initial value of the per-channel scale ``gamma`` (V1: 1e-6); ``None``
            for no layer scale (V2).
        use_grn: Global Response Normalisation in the MLP (V2).
        temporal_kernel: ``None`` for images (7 x 7 depthwise convolution), else the time
            extent of a ``k x 7 x 7`` depthwise convolution over ``(B, C, T, H, W)`` clips.
    """

    def __init__(
        self,
        dim: int,
        drop_path: float = 0.0,
        layer_scale: float | None = 1e-6,
        use_grn: bool = False,
        mlp_ratio: float = 4.0,
        temporal_kernel: int | None = None,
    ) -> None:
        super().__init__()
        if temporal_kernel is None:
            self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        else:
            if temporal_kernel % 2 == 0:
                raise ValueError(f"temporal_kernel must be odd, got {temporal_kernel}")
            kernel, pad = (temporal_kernel, 7, 7), (temporal_kernel // 2, 3, 3)
            self.conv_dw = nn.Conv3d(dim, dim, kernel, padding=pad, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = ConvNeXtMlp(dim, int(mlp_ratio * dim), use_grn)
        self.gamma = None if layer_scale is None else nn.Parameter(torch.full((dim,), layer_scale))
        self.drop_path = drop_path

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x``: ``(B, C, *spatial)``; ``mask``: ``(B, 1, *spatial)`` of 0/1 or ``None``."""
        branch = self.conv_dw(x).movedim(1, -1)  # channels last: LN and MLP act per position
        branch = self.mlp(self.norm(branch), None if mask is None else mask.movedim(1, -1))
        if self.gamma is not None:
            branch = branch * self.gamma
        x = x + drop_path(branch.movedim(-1, 1), self.drop_path, self.training, None)
        return x if mask is None else x * mask


class ConvNeXtStage(nn.Module):
    """A (down)sampling layer (``LN + conv``; timm's ``downsample.0/1``) and blocks."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        stride: int,
        depth: int,
        drop_paths: list[float],
        video: bool,
        **block_kwargs,
    ) -> None:
        super().__init__()
        if in_dim == dim and stride == 1:
            self.downsample: nn.Module = nn.Identity()
        else:
            conv = (
                PatchConv3d(in_dim, dim, (1, stride, stride))
                if video
                else PatchConv2d(in_dim, dim, stride)
            )
            self.downsample = nn.Sequential(ChannelsLayerNorm(in_dim, eps=NORM_EPS), conv)
        self.stride = stride
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(dim, drop_paths[i], **block_kwargs) for i in range(depth)
        )


@records_arguments
class ConvNeXt(nn.Module):
    """ConvNeXt encoder over a token grid of stride ``patch_size``, without a classifier.

    Args:
        img_size: input side (or ``(H, W)``).
        patch_size: stride of the output token grid (the mask collator's patch): 1, 2, 4, 8,
            16 or 32 (timm's layout, the only one that loads timm weights unchanged).
        in_chans: input channels.
        depths, dims: blocks and widths per stage (:data:`CONVNEXT_SIZES`).
        layer_scale: initial layer scale (V1: 1e-6), ``None`` for none (V2).
        use_grn: ConvNeXt V2 blocks (GRN in the MLP).
        drop_path_rate: stochastic depth, rising linearly over all blocks.
        num_frames, tubelet_size: clips of ``num_frames > 1`` frames enter as tubelets.
        temporal_kernel: time extent of the depthwise convolutions of the video variant.
        channels_last: keep 2-D activations on CUDA in channels-last memory (cuDNN's fast
            depthwise path; the LN/MLP's channel-last views become free). Not on the CPU,
            where it measured 16% slower (ConvNeXt-Atto, 224 px, batch 16, fwd+bwd).
        init_std: std of the truncated-normal initialisation of convolutions and linears.
    """

    pos_embed_kind = "sincos"  # convolutions encode position implicitly; predictors add sincos

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 32,
        in_chans: int = 3,
        depths: tuple[int, ...] = (3, 3, 9, 3),
        dims: tuple[int, ...] = (96, 192, 384, 768),
        layer_scale: float | None = 1e-6,
        use_grn: bool = False,
        drop_path_rate: float = 0.0,
        num_frames: int = 1,
        tubelet_size: int = 2,
        temporal_kernel: int = 3,
        channels_last: bool = True,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if len(depths) != len(dims) or not depths:
            raise ValueError(f"depths {depths} and dims {dims} must be non-empty, equal length")
        self.img_size = to_2tuple(img_size)
        stem, strides = stage_strides(patch_size, len(dims))
        if any(s % patch_size for s in self.img_size):
            raise ValueError(
                f"image size {self.img_size} is not divisible by the token stride "
                f"patch_size={patch_size}"
            )
        self.video = num_frames > 1
        if self.video and num_frames % tubelet_size:
            raise ValueError(f"num_frames={num_frames} is not divisible by {tubelet_size=}")
        self.patch_size, self.stem_stride = patch_size, stem
        self.num_frames, self.tubelet_size = num_frames, tubelet_size
        spatial = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.grid_size: tuple[int, ...] = (
            (num_frames // tubelet_size, *spatial) if self.video else spatial
        )
        self.num_patches = math.prod(self.grid_size)
        self.embed_dim = self.num_features = dims[-1]
        self.depths, self.dims = tuple(depths), tuple(dims)
        self.channels_last = channels_last and not self.video

        stem_conv = (
            PatchConv3d(in_chans, dims[0], (tubelet_size, stem, stem))
            if self.video
            else PatchConv2d(in_chans, dims[0], stem)
        )
        self.stem = nn.Sequential(stem_conv, ChannelsLayerNorm(dims[0], eps=NORM_EPS))
        rates = drop_path_rates(drop_path_rate, sum(depths))
        block_kwargs = dict(
            layer_scale=layer_scale,
            use_grn=use_grn,
            temporal_kernel=temporal_kernel if self.video else None,
        )
        self.stages = nn.ModuleList()
        in_dim, first = dims[0], 0
        for dim, depth, stride in zip(dims, depths, strides, strict=True):
            self.stages.append(
                ConvNeXtStage(
                    in_dim,
                    dim,
                    stride,
                    depth,
                    rates[first : first + depth],
                    self.video,
                    **block_kwargs,
                )
            )
            in_dim, first = dim, first + depth
        self.norm = nn.LayerNorm(dims[-1], eps=NORM_EPS)  # per token; timm's head.norm
        self.grad_checkpointing = False
        self._init_weights(init_std)

    def _init_weights(self, std: float) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)

    @property
    def blocks(self) -> list[nn.Module]:
        """All blocks in order (for "train the last k blocks" options)."""
        return [blk for stage in self.stages for blk in stage.blocks]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory."""
        self.grad_checkpointing = enable

    def patchify(self, x: Tensor) -> Tensor:
        """Raw pixels in the token grid: ``(B, N, C * [t *] p * p)``, token order."""
        p = self.patch_size
        if self.video:
            u = self.tubelet_size
            return rearrange(x, "b c (t u) (h p) (w q) -> b (t h w) (c u p q)", u=u, p=p, q=p)
        return rearrange(x, "b c (h p) (w q) -> b (h w) (c p q)", p=p, q=p)

    def _check_input(self, x: Tensor) -> None:
        expected = (self.num_frames, *self.img_size) if self.video else self.img_size
        if x.ndim != (5 if self.video else 4) or tuple(x.shape[-len(expected) :]) != expected:
            raise ValueError(
                f"{type(self).__name__} expects inputs (B, C, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}; set encoder.img_size / encoder.num_frames to the data's"
            )

    def feature_map(self, x: Tensor, visible: Tensor | None = None) -> Tensor:
        """The last stage's features ``(B, D, *grid)``, before the final norm.

        ``visible``: optional ``(B, *grid)`` bool mask of the tokens the encoder may see;
        everything else is held at zero throughout (see the module docstring).
        """
        self._check_input(x)
        masks: dict[int, Tensor] = {}

        def mask_at(stride: int) -> Tensor | None:
            if visible is None:
                return None
            if stride not in masks:
                masks[stride] = upsample_mask(visible, self.patch_size // stride, x.dtype)
            return masks[stride]

        if visible is not None:
            pixel_mask = upsample_mask(visible, self.patch_size, x.dtype)
            if self.video:
                pixel_mask = pixel_mask.repeat_interleave(self.tubelet_size, dim=2)
            x = x * pixel_mask
        x = self.stem(x)
        if self.channels_last and x.is_cuda:  # slower on this CPU (oneDNN): 1.12 s vs 0.97 s
            x = x.contiguous(memory_format=torch.channels_last)
        stride = self.stem_stride
        mask = mask_at(stride)
        x = x if mask is None else x * mask
        for stage in self.stages:
            if not isinstance(stage.downsample, nn.Identity):
                stride *= stage.stride
                mask = mask_at(stride)
                x = stage.downsample(x)
                x = x if mask is None else x * mask
            for blk in stage.blocks:
                if self.grad_checkpointing and self.training:
                    x = checkpoint(blk, x, mask, use_reentrant=False)
                else:
                    x = blk(x, mask)
        return x

    def forward(self, x: Tensor, keep: Ragged | None = None) -> Tensor:
        """Encode images or clips.

        Args:
            x: ``(B, C, H, W)`` images or ``(B, C, T, H, W)`` clips.
            keep: optional indices (into the ``N`` tokens of the grid) of the tokens the
                encoder may see: ``k * B`` sequences, sequence ``b * k + j`` from sample ``b``.
                Each sequence is encoded as its own masked copy of its sample.

        Returns:
            ``(B, N, D)`` features of all tokens when ``keep`` is None, else ``(T, D)``
            features of the kept tokens packed in ``keep.values`` order.
        """
        if keep is None:
            return self.norm(self.feature_map(x).flatten(2).transpose(1, 2))
        batch, seqs = x.shape[0], keep.num_seqs
        if seqs == 0 or seqs % batch:
            raise ValueError(f"keep has {seqs} sequences, not a multiple of the batch {batch}")
        if seqs != batch:
            x = x.repeat_interleave(seqs // batch, dim=0)
        visible = keep.to_mask(self.num_patches).view(seqs, *self.grid_size)
        features = self.feature_map(x, visible)
        tokens = features.flatten(2).transpose(1, 2).reshape(-1, self.embed_dim)
        return self.norm(tokens[keep.flat_index(self.num_patches)])

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, N, D)`` features of every token (timm-style name)."""
        return self.forward(x)


def stage_strides(patch_size: int, num_stages: int) -> tuple[int, list[int]]:
    """Stem stride and per-stage strides that reach a token stride of ``patch_size``.

    The stem takes ``min(4, patch_size)``; stages 1.. downsample by 2 until the product is
    ``patch_size`` (stage 0 never downsamples: the stem does). ``patch_size`` must be a power
    of two up to ``4 * 2 ** (num_stages - 1)`` (32 for the usual four stages).
    """
    largest = STEM_STRIDE * 2 ** (num_stages - 1)
    if patch_size < 1 or patch_size & (patch_size - 1) or patch_size > largest:
        valid = [2**i for i in range(largest.bit_length())]
        raise ValueError(
            f"a ConvNeXt with {num_stages} stages has token strides {valid}, "
            f"not patch_size={patch_size}"
        )
    stem = min(STEM_STRIDE, patch_size)
    downsamplings = (patch_size // stem).bit_length() - 1
    return stem, [1] + [2 if i <= downsamplings else 1 for i in range(1, num_stages)]


def upsample_mask(visible: Tensor, factor: int, dtype: torch.dtype) -> Tensor:
    """``(B, *grid)`` bool -> ``(B, 1, *grid')`` 0/1 of ``dtype``, each spatial (last two) axis
    repeated ``factor`` times (nearest-neighbour upsampling to a finer resolution)."""
    mask = visible[:, None].to(dtype)
    if factor > 1:
        mask = mask.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)
    return mask


def convert_timm_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """A timm ConvNeXt / ConvNeXt V2 ``state_dict`` in this encoder's layout.

    Names match timm's except the final norm (timm ``head.norm``, ours ``norm``, applied per
    token rather than after pooling); timm's classifier (``head.fc``) has no counterpart in
    an encoder and is dropped. The 1 x 1 convolution MLPs of timm's small models
    (``conv_mlp=True``: atto to nano) become the equivalent linear weights.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("head.fc.") or key.startswith("head.pre_logits"):
            continue
        if key.startswith("head.norm."):
            key = "norm." + key.removeprefix("head.norm.")
        if ".mlp.fc" in key and key.endswith(".weight") and value.ndim == 4:
            value = value.flatten(1)
        if key.endswith(".grn.weight") or key.endswith(".grn.bias"):
            value = value.flatten()  # timm's conv-MLP GRN stores (1, C, 1, 1)
        out[key] = value
    return out


def inflate_image_state_dict(
    state_dict: dict[str, Tensor], tubelet_size: int = 2, temporal_kernel: int = 3
) -> dict[str, Tensor]:
    """Image ConvNeXt weights for the video variant (I3D inflation, Carreira & Zisserman 2017).

    The stem kernel is repeated over the tubelet and divided by its length (a static clip
    gives the image features); depthwise kernels are placed at the centre time step (zero
    elsewhere, so each frame starts out processed alone); downsampling kernels gain a unit
    time axis.
    """
    out = {}
    for key, value in state_dict.items():
        if key == "stem.0.weight":
            value = value[:, :, None].repeat(1, 1, tubelet_size, 1, 1) / tubelet_size
        elif key.endswith("conv_dw.weight") and value.ndim == 4:
            inflated = value.new_zeros(value.shape[0], 1, temporal_kernel, *value.shape[-2:])
            inflated[:, :, temporal_kernel // 2] = value
            value = inflated
        elif key.endswith("downsample.1.weight") and value.ndim == 4:
            value = value[:, :, None]
        out[key] = value
    return out


def _register(size: str, version: int) -> None:
    v2 = version == 2
    name = f"convnext{'v2' if v2 else ''}_{size}"

    def build(**kwargs) -> ConvNeXt:
        args: dict = dict(CONVNEXT_SIZES[size])
        args.update(layer_scale=None, use_grn=True) if v2 else args.update(layer_scale=1e-6)
        return ConvNeXt(**{**args, **kwargs})

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"ConvNeXt{' V2' if v2 else ''}-{size.capitalize()}: {CONVNEXT_SIZES[size]}."
    register_encoder(build)


for _size in CONVNEXT_SIZES:
    for _version in (1, 2):
        _register(_size, _version)

__all__ = [
    "CONVNEXT_SIZES",
    "ConvNeXt",
    "ConvNeXtBlock",
    "GlobalResponseNorm",
    "PatchConv2d",
    "PatchConv3d",
    "convert_timm_state_dict",
    "inflate_image_state_dict",
    "stage_strides",
    "upsample_mask",
]
