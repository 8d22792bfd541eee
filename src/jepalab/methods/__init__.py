"""Training methods: "given a batch, the loss and its metrics"."""

from jepalab.methods.base import Method, MethodOutput
from jepalab.methods.ijepa import IJEPA

__all__ = ["IJEPA", "Method", "MethodOutput"]
