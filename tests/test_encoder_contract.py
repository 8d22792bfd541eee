"""The Encoder interface (jepalab.models.encoder), checked on every registered encoder.

Each entry of ``list_encoders()`` is built small (its family's shape arguments shrunk, its
own layout kept), for images and for clips, and must: satisfy the protocol, give ``(B, N,
D)`` tokens on its grid, encode kept tokens without any influence from the others, cut the
input into its grid (``patchify``), list its blocks, and give the same features with
activation checkpointing.
"""

from __future__ import annotations

import pytest
import torch

from jepalab.models import Encoder, create_encoder, list_encoders, repeated_blocks
from jepalab.ragged import Ragged

SMALL = {
    "vit": dict(embed_dim=32, depth=2, num_heads=2, patch_size=4),
    "convnext": dict(dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), patch_size=4),
}


def _small(name: str, video: bool) -> torch.nn.Module:
    family = "convnext" if name.startswith("convnext") else "vit"
    kwargs = dict(SMALL[family], img_size=16, in_chans=3)
    if video:
        kwargs.update(num_frames=4, tubelet_size=2)
    torch.manual_seed(0)
    return create_encoder(name, **kwargs).eval()


@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
@pytest.mark.parametrize("name", list_encoders())
def test_every_registered_encoder_keeps_the_contract(name, video):
    encoder = _small(name, video)
    assert isinstance(encoder, Encoder)
    shape = (2, 3, 4, 16, 16) if video else (2, 3, 16, 16)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    n, d = encoder.num_patches, encoder.embed_dim
    assert n == torch.tensor(encoder.grid_size).prod() and encoder.pos_embed_kind in (
        "sincos",
        "rope",
    )
    with torch.no_grad():
        tokens = encoder(x)
        assert tokens.shape == (2, n, d) and torch.isfinite(tokens).all()
        # kept tokens only: the others have no influence (change the pixels of a dropped token)
        keep_ids = [torch.arange(0, n, 2), torch.arange(1, n, 3)]
        keep = Ragged.from_sequences(keep_ids)
        kept = encoder(x, keep)
        assert kept.shape == (sum(len(k) for k in keep_ids), d)
        patches = encoder.patchify(x)
        assert patches.shape[:2] == (2, n)
        assert patches[0].numel() // n * n == x[0].numel()
        changed = x.clone()
        pixels = encoder.patchify(changed)
        pixels[0, 1] += 10.0  # token 1 of sample 0 is not kept (its sequence keeps 0, 2, ...)
        changed = _unpatchify(encoder, pixels, x)
        assert torch.allclose(encoder(changed, keep), kept, atol=1e-5)
    blocks = list(encoder.blocks)
    assert blocks and repeated_blocks(encoder) == blocks
    encoder.set_grad_checkpointing(True)
    with torch.no_grad():
        assert torch.allclose(encoder(x), tokens, atol=1e-6)


def _unpatchify(encoder, patches: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The input whose patchify is ``patches``: found by least squares through the linear
    map ``patchify`` (a permutation), so the test needs no knowledge of the layout."""
    flat = like.reshape(-1)
    index = encoder.patchify(torch.arange(flat.numel(), dtype=torch.float64).reshape(like.shape))
    out = torch.empty_like(flat)
    out[index.reshape(-1).long()] = patches.reshape(-1).to(out.dtype)
    return out.reshape(like.shape)
