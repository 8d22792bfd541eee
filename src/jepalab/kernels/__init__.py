"""Attention kernels and the dispatcher the models call."""

from jepalab.kernels.attention import BACKENDS, VarlenLayout, attention

__all__ = ["BACKENDS", "VarlenLayout", "attention"]
