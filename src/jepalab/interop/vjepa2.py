"""facebookresearch/vjepa2 (Assran et al. 2025, V-JEPA 2 and V-JEPA 2-AC):
``src/models/vision_transformer.py``, ``predictor.py``, ``ac_predictor.py``,
``utils/modules.py`` (``RoPEAttention``, ``ACRoPEAttention``), ``src/hub/backbones.py``.

Released files (``vitl.pt``, ``vith.pt``, ``vitg.pt``, ``vitg-384.pt``, ``vjepa2-ac-vitg.pt``):
``{"encoder", "predictor", "target_encoder", ...}``; keys start with ``module.backbone.``
(``DistributedDataParallel`` around ``MultiSeqWrapper``, pretraining) or ``module.`` (DDP
alone: ``app/vjepa_droid/train.py`` saves the AC encoder and predictor that way, so an AC
export writes ``module.``). A converted file remembers the prefixes it had, and exporting it
back to its own layout restores them (bit-identical round trip).

* Encoders ``vit_large`` (1024 x 24, 16 heads), ``vit_huge`` (1280 x 32, 16 heads) and
  ``vit_giant_xformers`` (1408 x 40, **22** heads, MLP 48/11), all ``use_rope=True``: the
  same parameter names as ours and no position table. Each head's channels are split into
  three chunks of ``2 * ((head_dim // 3) // 2)`` for time, row and column (rest unrotated),
  and the angles are expanded with ``.repeat`` where ``.repeat_interleave`` was meant -- the
  release keeps that bug because the weights were trained with it, so we build the encoder
  with ``rope_reference_layout=True``. The hub loads the encoder with ``strict=False``
  because "state_dict has pos_embed but we use RoPE": a ``pos_embed`` in the file is unused
  by the reference and is kept aside (``Converted.unused``) for export, never loaded.
* Predictor (``vit_predictor``, width 384, depth 12, 12 heads, ``num_mask_tokens=10``, RoPE):
  ``mask_tokens.{i}`` (1, 1, D) -> ours ``mask_tokens`` (n, D); an unused
  ``predictor_pos_embed`` is kept aside like the encoder's. The reference sorts context and
  target tokens by position before the blocks; with RoPE and no mask, attention is
  permutation-equivariant, so running them unsorted gives the same outputs.
* AC predictor (``vit_ac_predictor``: width 1024, depth 24, 16 heads, action/state 7-D,
  frame-causal, RoPE through ``ACRoPEAttention``): per step ``[action, state, (extrinsics),
  patches]``; patch tokens rotate by ``(t, row, column)``, conditioning tokens only in the
  time chunk. ``extrinsics_encoder`` (Linear 6 -> D) is always built; the released model
  uses no extrinsics (``use_extrinsics: false``), so the layout ``vjepa2_ac`` keeps it aside
  as unused and ``vjepa2_ac_extrinsics`` maps it onto ours (a third conditioning token).
"""

from __future__ import annotations

from jepalab.interop.common import Converted, OfficialLayout, StateDict, identity, keep_all
from jepalab.interop.vjepa import split_mask_tokens, stack_mask_tokens

ROPE = {"pos_embed": "rope", "rope_reference_layout": True}
GIANT_HEADS = {1408: 22}  # vit_giant_xformers; our "giant" (I-JEPA / V-JEPA's) has 16


def _set_aside(state_dict: StateDict, keys: tuple[str, ...]) -> Converted:
    weights = dict(state_dict)
    unused = {key: weights.pop(key) for key in keys if key in weights}
    return Converted(weights, unused)


def encoder_in(state_dict: StateDict) -> Converted:
    """Identity, with the reference-unused sincos ``pos_embed`` set aside."""
    return _set_aside(state_dict, ("pos_embed",))


def predictor_in(state_dict: StateDict) -> Converted:
    converted = _set_aside(state_dict, ("predictor_pos_embed",))
    return Converted(stack_mask_tokens(converted.state_dict), converted.unused)


def ac_predictor_in(state_dict: StateDict) -> Converted:
    """Identity, with the unused ``extrinsics_encoder`` (``use_extrinsics: false``) set aside."""
    return _set_aside(state_dict, ("extrinsics_encoder.weight", "extrinsics_encoder.bias"))


def ac_predictor_out(state_dict: StateDict) -> StateDict:
    """Identity; a predictor without extrinsics gets the zero ``extrinsics_encoder`` that the
    reference always builds (its hub loader is strict), which it then never uses."""
    out = dict(state_dict)
    if "extrinsics_encoder.weight" not in out:
        action = out["action_encoder.weight"]
        out["extrinsics_encoder.weight"] = action.new_zeros(action.shape[0], action.shape[1] - 1)
        out["extrinsics_encoder.bias"] = action.new_zeros(action.shape[0])
    return out


_BACKBONE = "module.backbone."

LAYOUT = OfficialLayout(
    name="vjepa2",
    repo="facebookresearch/vjepa2",
    prefixes={"encoder": _BACKBONE, "target_encoder": _BACKBONE, "predictor": _BACKBONE},
    encoder_kwargs=ROPE,
    predictor="masked_vit_predictor",
    predictor_kwargs=ROPE,
    encoder_in=encoder_in,
    encoder_out=identity,
    predictor_in=predictor_in,
    predictor_out=split_mask_tokens,
    encoder_heads=GIANT_HEADS,
    predictor_heads=12,
)

_AC = dict(
    repo="facebookresearch/vjepa2",
    # app/vjepa_droid/train.py wraps the bare encoder and predictor in DDP only: ``module.``
    prefixes={"encoder": "module.", "target_encoder": "module.", "predictor": "module."},
    encoder_kwargs=ROPE,
    predictor="action_predictor",
    encoder_in=encoder_in,
    encoder_out=identity,
    predictor_out=ac_predictor_out,
    encoder_heads=GIANT_HEADS,
    predictor_heads=16,
)
AC_LAYOUT = OfficialLayout(
    name="vjepa2_ac", predictor_kwargs=ROPE, predictor_in=ac_predictor_in, **_AC
)
AC_EXTRINSICS_LAYOUT = OfficialLayout(
    name="vjepa2_ac_extrinsics",
    predictor_kwargs={**ROPE, "extrinsics_dim": 6},
    predictor_in=keep_all,
    **_AC,
)
