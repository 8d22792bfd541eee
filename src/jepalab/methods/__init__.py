"""Training methods: "given a batch, the loss and its metrics"."""

from jepalab.methods.action import ActionConditioned, encode_frames
from jepalab.methods.base import Method, MethodOutput, MonitorInputs
from jepalab.methods.ijepa import IJEPA
from jepalab.methods.vjepa import VJEPA

__all__ = [
    "ActionConditioned",
    "IJEPA",
    "VJEPA",
    "Method",
    "MethodOutput",
    "MonitorInputs",
    "encode_frames",
]
