"""The one feature extractor of the evaluations: a labelled split through a frozen encoder,
once, keeping pooled vectors (linear and k-NN probes) and/or all tokens (attentive
probe). Unreadable samples are left out (counted by the caller), not replaced."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from jepalab.data.collate import collate_readable
from jepalab.errors import DataError
from jepalab.progress import progress_bar


@dataclass
class CachedFeatures:
    """One encoder's features of one split, kept in memory for every probe (CPU, fp32)."""

    pooled: Tensor | None  # (n, D): what the linear and k-NN probes read
    tokens: Tensor | None  # (n, N, D): what the attentive probe reads
    labels: Tensor  # (n,)


def pool_tokens(tokens: Tensor, pooling: str) -> Tensor:
    """``(B, N, D) -> (B, D)``: average (I-JEPA's linear probe) or max over tokens."""
    return tokens.mean(1) if pooling == "mean" else tokens.amax(1)


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    dataset: Dataset,
    *,
    raw_pixels: bool = False,
    pooled: bool = True,
    tokens: bool = False,
    pooling: str = "mean",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    desc: str = "features",
    progress: bool = False,
) -> CachedFeatures:
    """Run a labelled split through a frozen ``encoder`` (``(B, N, D)`` tokens, in eval
    mode; its mode is restored) once, keeping the pooled vectors and/or all tokens.

    ``raw_pixels``: the raw-pixel baseline instead, with flattened pixels as the pooled vector
    and the pixels cut into ``encoder``'s patch / tubelet grid (``encoder.patchify``) as tokens.
    Raises :class:`~jepalab.errors.DataError` when no sample of the split can be read.
    """
    was_training = encoder.training
    encoder.eval()
    try:
        return _extract(
            encoder,
            dataset,
            raw_pixels,
            pooled,
            tokens,
            pooling,
            batch_size,
            device,
            desc,
            progress,
        )
    finally:
        encoder.train(was_training)


def _extract(
    encoder, dataset, raw_pixels, pooled, tokens, pooling, batch_size, device, desc, progress
) -> CachedFeatures:
    # unreadable samples (None; the dataset logs the file) are left out, as `jepalab train`'s
    # probe does: the split's length minus the labels kept is their number
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_readable)
    out: dict[str, list[Tensor]] = {"pooled": [], "tokens": [], "labels": []}
    for batch in progress_bar(loader, desc=desc, enabled=progress, unit="batch", leave=False):
        if batch is None:  # no sample of this batch could be read
            continue
        x, y = batch
        x = x.to(device)
        t = encoder.patchify(x) if raw_pixels else encoder(x)
        if not raw_pixels and t.ndim != 3:
            raise ValueError(
                f"the encoder returned features of shape {tuple(t.shape[1:])} per sample; "
                "extract_features needs (N, D) tokens per sample"
            )
        if pooled:
            p = x.flatten(1) if raw_pixels else pool_tokens(t, pooling)
            out["pooled"].append(p.float().cpu())
        if tokens:
            out["tokens"].append(t.float().cpu())
        out["labels"].append(torch.as_tensor(y).long())
    if not out["labels"]:
        raise DataError(f"{desc}: no sample could be read (the warnings name the files)")
    return CachedFeatures(
        pooled=torch.cat(out["pooled"]) if pooled else None,
        tokens=torch.cat(out["tokens"]) if tokens else None,
        labels=torch.cat(out["labels"]),
    )


__all__ = ["CachedFeatures", "extract_features", "pool_tokens"]
