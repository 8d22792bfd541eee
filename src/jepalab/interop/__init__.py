"""Official checkpoint conversion: I-JEPA (facebookresearch/ijepa), V-JEPA
(facebookresearch/jepa), V-JEPA 2 and V-JEPA 2-AC (facebookresearch/vjepa2) <-> jepalab.

>>> from jepalab import create_encoder
>>> enc = create_encoder("vit_large_patch16", img_size=256, num_frames=16,
...                      checkpoint="vitl.pt")  # layout detected, loaded strictly

One module per official repository holds its layout (key names, wrapper prefixes, mask
tokens, position schemes and the quirks its weights depend on); :mod:`.checkpoint` reads,
detects, converts and loads whole files; :mod:`.infer` reads a fitting config off the shapes.

The other way round, :class:`~jepalab.interop.swm.SWMCostModel` hands a trained world model
to stable-worldmodel's planners (``get_cost``), imported on first use.
"""

from jepalab.interop.checkpoint import (
    FORMATS,
    JEPALAB,
    LAYOUTS,
    convert_file,
    detect_format,
    implied_kwargs,
    load_encoder,
    load_predictor,
    read_checkpoint,
    tensors_equal,
    to_jepalab,
    to_official,
)
from jepalab.interop.common import CheckpointMismatchError, OfficialLayout, strip_wrappers


def __getattr__(name: str):
    if name == "SWMCostModel":  # lazy: it pulls in the planning code
        from jepalab.interop.swm import SWMCostModel

        return SWMCostModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SWMCostModel",
    "FORMATS",
    "JEPALAB",
    "LAYOUTS",
    "CheckpointMismatchError",
    "OfficialLayout",
    "convert_file",
    "detect_format",
    "implied_kwargs",
    "load_encoder",
    "load_predictor",
    "read_checkpoint",
    "strip_wrappers",
    "tensors_equal",
    "to_jepalab",
    "to_official",
]
