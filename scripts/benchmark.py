#!/usr/bin/env python
"""Time one training step of a recipe and print JSON.

Recipes (``--recipe``):

* ``ijepa`` (default) -- the I-JEPA reference point of the docs: ViT-Ti/16 at 224 px, batch
  16, predictor depth 6 width 192, 1 context + 4 target blocks (paper mask settings), fp32.
* ``vjepa`` -- V-JEPA: ViT-Ti/16 over 16-frame clips at 112 px (2x16x16 tubelets, an 8x7x7
  grid), batch 8, predictor depth 6 width 192, the paper's short- and long-range 3-D masks.

    python scripts/benchmark.py                      # every token kept (jepalab default)
    python scripts/benchmark.py --parity             # the reference's trim-to-batch-minimum
    python scripts/benchmark.py --recipe vjepa --set encoder.img_size=224
    python scripts/benchmark.py --set encoder=vit_small_patch16 --batch-size 32
    python scripts/benchmark.py --encoders vit_tiny_patch16 vit_small_patch16 convnext_atto \
        convnext_tiny                                # one JSON record per encoder, same point

``--encoders`` swaps the encoder of the reference point (same image size and 16-px token
grid: ConvNeXts run at token stride 16, see docs/convnext.md) and prints a JSON list.

Reports ``step_ms`` (median of the timed steps, after warm-up), ``images_per_s``,
``context_tokens_per_s``, ``target_tokens_per_s`` (tokens actually processed), ``peak_mem_mb``
(CUDA: max allocated; CPU: process peak RSS) and the resolved settings. Input images are random
tensors: data loading is not timed, the mask collator is (it runs in workers in real runs,
so it is reported separately as ``collate_ms``).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from jepalab.config import config_dir, register_configs
from jepalab.data.sampling import SampleKey
from jepalab.device import resolve_device
from jepalab.methods.build import build_experiment
from jepalab.train.optim import build_adamw
from jepalab.train.trainer import move_to

# ViT-Ti/16's own shape (width 192, 3 heads, depth 12), spelled out so the point says it.
REFERENCE_POINT = [
    "encoder=vit_tiny_patch16",
    "encoder.img_size=224",
    "encoder.in_chans=3",
    "encoder.patch_size=16",
    "encoder.embed_dim=192",
    "encoder.num_heads=3",
    "encoder.depth=12",
    "predictor.embed_dim=192",
    "predictor.depth=6",
    "mask=multiblock",
]
VJEPA_POINT = [
    "encoder=vit_tiny_patch16",
    "encoder.img_size=112",
    "encoder.in_chans=3",
    "encoder.patch_size=16",
    "encoder.num_frames=16",
    "encoder.tubelet_size=2",
    "encoder.embed_dim=192",
    "encoder.num_heads=3",
    "encoder.depth=12",
    "predictor.embed_dim=192",
    "predictor.depth=6",
    "predictor.num_heads=3",
    "mask=multiblock3d",
]
RECIPES = {  # base experiment, reference point, parity mask config, default batch size
    "ijepa": ("ijepa_digits", REFERENCE_POINT, "mask=multiblock_parity", 16),
    "vjepa": ("vjepa_moving_digits", VJEPA_POINT, "mask=multiblock3d_parity", 8),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--recipe", default="ijepa", choices=sorted(RECIPES))
    p.add_argument("--experiment", default=None, help="base experiment config (recipe's)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    p.add_argument("--steps", type=int, default=8, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--parity", action="store_true", help="reference trimming + sampler quirks")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--encoders",
        nargs="*",
        default=None,
        metavar="NAME",
        help="time each registered encoder in turn at the recipe's point (prints a list)",
    )
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra config overrides, applied after the reference point",
    )
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    experiment, point, parity, batch_size = RECIPES[args.recipe]
    args.batch_size = args.batch_size or batch_size
    overrides = [f"experiment={args.experiment or experiment}", *point, *args.set]
    if args.parity:
        overrides.append(parity)
    if args.encoders is None:
        print(json.dumps(run(args, overrides), indent=2))
        return
    results = [run(args, with_encoder(overrides, name)) for name in args.encoders]
    print(json.dumps(results, indent=2))


def with_encoder(overrides: list[str], name: str) -> list[str]:
    """``overrides`` with the encoder swapped for ``name``; a ConvNeXt drops the ViT shape keys
    of the reference point (its widths come from its name)."""
    vit_only = ("encoder.depth=", "encoder.embed_dim=", "encoder.num_heads=")
    out = [o for o in overrides if not o.startswith(("encoder=", *vit_only))]
    # The named size's own width, heads and depth: the base experiment's (digits) ViT shape
    # would otherwise leak into every ViT.
    shape = [] if name.startswith("convnext") else [f"{k}null" for k in vit_only]
    return [f"encoder={name}", *out, *shape]


def run(args: argparse.Namespace, overrides: list[str]) -> dict:
    """Build the recipe with ``overrides`` and time ``args.steps`` training steps."""
    register_configs()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    device = resolve_device(args.device)
    dtype = {
        "auto": torch.bfloat16 if device.type == "cuda" else None,
        "fp32": None,
        "bf16": torch.bfloat16,
    }[args.precision]

    exp = build_experiment(cfg)
    method = exp.method.to(device).train()
    optimizer = build_adamw(method, cfg.optim.lr, cfg.optim.weight_decay)
    frames = (cfg.encoder.num_frames,) if cfg.encoder.num_frames > 1 else ()
    shape = (cfg.encoder.in_chans, *frames, cfg.encoder.img_size, cfg.encoder.img_size)
    gen = torch.Generator().manual_seed(0)

    def make_batch(step: int):
        items = [
            ((torch.randn(shape, generator=gen), 0), SampleKey(i, 0, step))
            for i in range(args.batch_size)
        ]
        t0 = time.perf_counter()
        batch = exp.collate_fn(items)
        return move_to(batch, device), time.perf_counter() - t0

    def train_step(batch) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = method(batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        method.after_optimizer_step(1, 1000)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, collate, ctx_tokens, tgt_tokens = [], [], [], []
    for step in range(args.warmup + args.steps):
        batch, collate_s = make_batch(step)
        sync()
        t0 = time.perf_counter()
        train_step(batch)
        sync()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
            collate.append(collate_s)
            ctx_tokens.append(batch.masks.context.total)
            tgt_tokens.append(batch.masks.targets.total)

    step_s = statistics.median(times)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total_time = sum(times)
    result = {
        "recipe": cfg.method.name,
        "mode": "parity (trim to batch min)" if args.parity else "all tokens kept",
        "step_ms": round(1000 * step_s, 1),
        "step_ms_all": [round(1000 * t, 1) for t in times],
        "images_per_s": round(args.batch_size / step_s, 2),
        "context_tokens_per_s": round(sum(ctx_tokens) / total_time, 1),
        "target_tokens_per_s": round(sum(tgt_tokens) / total_time, 1),
        "context_tokens_per_sample": round(float(np.mean(ctx_tokens)) / args.batch_size, 1),
        "target_tokens_per_sample": round(float(np.mean(tgt_tokens)) / args.batch_size, 1),
        "collate_ms": round(1000 * statistics.median(collate), 2),
        "peak_mem_mb": round(peak_mb, 1),
        "config": {
            "encoder": cfg.encoder.name,
            "img_size": cfg.encoder.img_size,
            "patch_size": cfg.encoder.patch_size,
            "num_frames": cfg.encoder.num_frames,
            "tubelet_size": cfg.encoder.tubelet_size if cfg.encoder.num_frames > 1 else None,
            "depth": cfg.encoder.depth,
            "encoder_params_m": round(
                sum(p.numel() for p in method.context_encoder.parameters()) / 1e6, 2
            ),
            "predictor_depth": cfg.predictor.depth,
            "predictor_width": cfg.predictor.embed_dim,
            "batch_size": args.batch_size,
            "mask": cfg.mask.name,
            "precision": str(dtype or torch.float32),
            "overrides": overrides,
        },
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads)",
        "torch": torch.__version__,
    }
    return result


if __name__ == "__main__":
    main()
