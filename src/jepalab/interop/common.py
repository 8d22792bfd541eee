"""What every official layout shares: wrapper prefixes, the layout record, strict loading.

The official training scripts save ``model.state_dict()`` of wrapped modules, so every key
carries the wrappers' attribute names: ``module.`` from ``DistributedDataParallel`` (all three
repositories) and ``backbone.`` from V-JEPA's ``MultiMaskWrapper`` /
``PredictorMultiMaskWrapper`` (facebookresearch/jepa) and V-JEPA 2's ``MultiSeqWrapper``
(facebookresearch/vjepa2). Their own loaders strip them (vjepa2 ``src/hub/backbones.py``,
``_clean_backbone_key``); so do we, and we write them back on export.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from jepalab.errors import CheckpointError

StateDict = dict[str, Tensor]
WRAPPER_PREFIXES = ("module.", "backbone.")
ROLES = ("encoder", "target_encoder", "predictor")


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's keys or shapes do not fit the model it is loaded into."""


@dataclass(frozen=True)
class Converted:
    """One module's weights in jepalab's layout, plus the official tensors we have no use for.

    ``unused`` maps official key -> tensor for tensors that the official *loader itself*
    ignores (e.g. a sincos table saved next to RoPE weights); they are kept so that export
    gives the official file back unchanged, never loaded into a jepalab module.
    """

    state_dict: StateDict
    unused: StateDict = field(default_factory=dict)


@dataclass(frozen=True)
class OfficialLayout:
    """How one official repository stores its models, and how to map them onto ours.

    Attributes:
        name: the ``src_format`` / ``out_format`` name of ``jepalab convert`` (``"ijepa"``,
            ``"vjepa"``, ``"vjepa2"``, ...).
        repo: the official repository.
        prefixes: the wrapper prefix each role is saved with (written back on export).
        encoder_kwargs: what our encoder needs to reproduce the official one (positions).
        predictor: our registered predictor that reproduces the official one.
        predictor_kwargs: its options implied by the layout.
        encoder_heads: official ``num_heads`` per encoder width, where it is not ours.
        predictor_heads: the official predictor's heads (None: the encoder's).
        encoder_in / encoder_out: official <-> jepalab encoder weights.
        predictor_in / predictor_out: official <-> jepalab predictor weights.
    """

    name: str
    repo: str
    prefixes: Mapping[str, str]
    encoder_kwargs: Mapping[str, Any]
    predictor: str
    predictor_kwargs: Mapping[str, Any]
    encoder_in: Callable[[StateDict], Converted]
    encoder_out: Callable[[StateDict], StateDict]
    predictor_in: Callable[[StateDict], Converted]
    predictor_out: Callable[[StateDict], StateDict]
    encoder_heads: Mapping[int, int] = field(default_factory=dict)
    predictor_heads: int | None = None


def strip_wrappers(state_dict: Mapping[str, Tensor], where: str = "state dict") -> StateDict:
    """Remove leading ``module.`` / ``backbone.`` wrapper prefixes from every key."""
    out: StateDict = {}
    for key, value in state_dict.items():
        new = key
        while new.startswith(WRAPPER_PREFIXES):
            new = new.split(".", 1)[1]
        if new in out:
            raise CheckpointMismatchError(
                f"{where}: keys {key!r} and another both become {new!r} once the wrapper "
                f"prefixes {WRAPPER_PREFIXES} are removed; the file mixes two models"
            )
        out[new] = value
    return out


def wrapper_prefix(state_dict: Mapping[str, Tensor]) -> str:
    """The wrapper prefix all keys share (``"module.backbone."``, ``"module."``, ``""``)."""
    prefixes = set()
    for key in state_dict:
        prefix = ""
        while key.startswith(WRAPPER_PREFIXES):
            head, key = key.split(".", 1)
            prefix += head + "."
        prefixes.add(prefix)
    return prefixes.pop() if len(prefixes) == 1 else ""


def add_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> StateDict:
    return {prefix + key: value for key, value in state_dict.items()}


def identity(state_dict: StateDict) -> StateDict:
    return dict(state_dict)


def keep_all(state_dict: StateDict) -> Converted:
    return Converted(dict(state_dict))


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_state_dict(
    module: nn.Module, state_dict: Mapping[str, Tensor], where: str, fit_hint: str | None = None
) -> None:
    """Raise :class:`CheckpointMismatchError` naming every missing key, unexpected key and
    shape mismatch between ``state_dict`` and ``module`` (what ``strict=False`` would hide)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k}: {_shape(state_dict[k])} in the checkpoint, {_shape(expected[k])} in the model"
        for k in expected
        if k in state_dict and _shape(state_dict[k]) != _shape(expected[k])
    ]
    if not (missing or unexpected or wrong):
        return
    lines = [f"{where} does not fit the {type(module).__name__} it is loaded into:"]
    for title, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches", wrong),
    ):
        if items:
            more = f" ... (+{len(items) - 8} more)" if len(items) > 8 else ""
            lines.append(f"  {title} ({len(items)}): {', '.join(items[:8])}{more}")
    if fit_hint:
        lines.append(f"  A model that fits this checkpoint: {fit_hint}")
    raise CheckpointMismatchError("\n".join(lines))


def load_strict(
    module: nn.Module, state_dict: Mapping[str, Tensor], where: str, fit_hint: str | None = None
) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` after :func:`check_state_dict`, so a
    mismatch is reported with every offending key and a config that would fit."""
    check_state_dict(module, state_dict, where, fit_hint)
    module.load_state_dict(state_dict, strict=True)


__all__ = [
    "ROLES",
    "WRAPPER_PREFIXES",
    "CheckpointMismatchError",
    "Converted",
    "OfficialLayout",
    "StateDict",
    "add_prefix",
    "check_state_dict",
    "load_strict",
    "strip_wrappers",
]
