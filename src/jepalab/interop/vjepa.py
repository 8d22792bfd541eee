"""facebookresearch/jepa (Bardes et al. 2024, V-JEPA): ``src/models/vision_transformer.py``,
``src/models/predictor.py``, ``src/models/utils/{patch_embed,pos_embs,multimask}.py``.

Layout of a released file (``vitl16.pth.tar`` ...): ``{"encoder", "predictor",
"target_encoder", "opt", "scaler", "epoch", ...}``; the encoder is wrapped in
``MultiMaskWrapper`` and the predictor in ``PredictorMultiMaskWrapper`` (attribute
``backbone``), both in ``DistributedDataParallel``: keys start with ``module.backbone.``.

* Encoder: ours one to one (``patch_embed.proj`` Conv3d over ``tubelet x patch x patch``,
  ``pos_embed`` (1, N, D), ``blocks``, ``norm``). The released models were trained with
  ``uniform_power: true``: the 3-D sincos table gives time, row and column
  ``2 * ceil(D / 6)`` channels each, concatenated ``[time, row, column]`` and cut to ``D``
  (the column part loses its last channels when ``D`` is not a multiple of 6). The table is
  saved in the file and loaded as is into our ``pos_embed`` buffer, so no formula is redone.
* Predictor: ``mask_tokens.{i}`` (1, 1, D) each -- one per mask configuration, ours stacked
  as ``mask_tokens`` (n, D) --, ``predictor_pos_embed`` (same ``uniform_power`` table at the
  predictor width), ``predictor_embed``, ``predictor_blocks``, ``predictor_norm``,
  ``predictor_proj``. Heads: the encoder's (``app/vjepa/utils.init_video_model``).
"""

from __future__ import annotations

import re

import torch

from jepalab.interop.common import Converted, OfficialLayout, StateDict, identity, keep_all

_MASK_TOKEN = re.compile(r"^mask_tokens\.(\d+)$")


def stack_mask_tokens(state_dict: StateDict) -> StateDict:
    """``mask_tokens.{i}`` (1, 1, D) parameters (a ``ParameterList``) -> ``mask_tokens`` (n, D)."""
    out, tokens = {}, {}
    for key, value in state_dict.items():
        match = _MASK_TOKEN.match(key)
        if match:
            tokens[int(match.group(1))] = value
        else:
            out[key] = value
    if tokens:
        if sorted(tokens) != list(range(len(tokens))):
            raise ValueError(f"mask tokens are not numbered 0..n-1: {sorted(tokens)}")
        out["mask_tokens"] = torch.stack([tokens[i].reshape(-1) for i in range(len(tokens))])
    return out


def split_mask_tokens(state_dict: StateDict) -> StateDict:
    """Inverse of :func:`stack_mask_tokens`."""
    out = dict(state_dict)
    tokens = out.pop("mask_tokens")
    for i, token in enumerate(tokens):
        out[f"mask_tokens.{i}"] = token.reshape(1, 1, -1).clone()
    return out


def predictor_in(state_dict: StateDict) -> Converted:
    return Converted(stack_mask_tokens(state_dict))


LAYOUT = OfficialLayout(
    name="vjepa",
    repo="facebookresearch/jepa",
    prefixes={
        "encoder": "module.backbone.",
        "target_encoder": "module.backbone.",
        "predictor": "module.backbone.",
    },
    encoder_kwargs={"pos_embed": "sincos"},
    predictor="masked_vit_predictor",
    predictor_kwargs={"pos_embed": "sincos"},
    encoder_in=keep_all,
    encoder_out=identity,
    predictor_in=predictor_in,
    predictor_out=split_mask_tokens,
)
