"""facebookresearch/ijepa (Assran et al. 2023, I-JEPA): ``src/models/vision_transformer.py``.

Layout of a released file (``IN1K-vit.h.14-300e.pth.tar`` ...): ``{"encoder", "predictor",
"target_encoder", "opt", "scaler", "epoch", "loss", "batch_size", "world_size", "lr"}``, every
model saved through ``DistributedDataParallel`` (keys start with ``module.``).

* Encoder: the same names as ours (``patch_embed.proj`` Conv2d, ``pos_embed`` (1, N, D) fixed
  2-D sincos table with the column in the first half of the channels, ``blocks.i.{norm1,
  attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``), fused ``qkv`` laid out as
  ``(3, heads, head_dim)`` on the output axis -- exactly ours, so the mapping is the identity.
* Predictor: ``predictor_embed``, ``mask_token`` (1, 1, D) -- ours holds ``mask_tokens`` (1, D)
  --, ``predictor_pos_embed`` (1, N, D), ``predictor_blocks``, ``predictor_norm``,
  ``predictor_proj``. Heads: the encoder's (``helper.init_model``).
"""

from __future__ import annotations

from jepalab.interop.common import Converted, OfficialLayout, StateDict, identity, keep_all


def predictor_in(state_dict: StateDict) -> Converted:
    """``mask_token (1, 1, D)`` -> ``mask_tokens (1, D)``; everything else keeps its name."""
    out = dict(state_dict)
    if "mask_token" in out:
        out["mask_tokens"] = out.pop("mask_token").reshape(1, -1)
    return Converted(out)


def predictor_out(state_dict: StateDict) -> StateDict:
    out = dict(state_dict)
    tokens = out.pop("mask_tokens")
    if tokens.shape[0] != 1:
        raise ValueError(
            f"I-JEPA's predictor has one mask token; this predictor has {tokens.shape[0]} "
            "(export it as vjepa or vjepa2, whose predictors have one per mask configuration)"
        )
    out["mask_token"] = tokens.reshape(1, 1, -1)
    return out


LAYOUT = OfficialLayout(
    name="ijepa",
    repo="facebookresearch/ijepa",
    prefixes={"encoder": "module.", "target_encoder": "module.", "predictor": "module."},
    encoder_kwargs={"pos_embed": "sincos"},
    predictor="masked_vit_predictor",
    predictor_kwargs={"pos_embed": "sincos", "num_mask_tokens": 1},
    encoder_in=keep_all,
    encoder_out=identity,
    predictor_in=predictor_in,
    predictor_out=predictor_out,
)
