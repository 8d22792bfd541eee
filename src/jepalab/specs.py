"""What a module *is*: the constructor call that rebuilds it, stored with its weights.

A checkpoint of weights alone cannot say which position scheme, RoPE channel layout or head
count produced them (``qkv`` is ``(3 D, D)`` for any head count), and a model rebuilt with
the wrong one loads without complaint and computes something else. So every model class
decorated with :func:`records_arguments` keeps the full argument list it was built with
(defaults filled in) as ``module.jepalab_spec``::

    {"class": "jepalab.models.vit.VisionTransformer", "name": "vit_tiny_patch16",
     "kwargs": {"img_size": 32, ..., "pos_embed": "rope", "rope_reference_layout": False}}

``name`` is the registry name when the model came from ``create_encoder`` /
``create_predictor`` (``kwargs`` then rebuild it through the registry too). A module-valued
argument (a method's encoder) is stored as a reference ``{"$module": "context_encoder"}`` to
the submodule it became. :func:`module_specs` collects the specs of a module tree (what the
Trainer writes into checkpoints) and :func:`build_from_specs` rebuilds it, so a checkpoint
reloads without the configuration that made it. Specs are plain Python (dicts, lists,
numbers, strings), loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from torch import nn

from jepalab.errors import CheckpointError

SPEC_ATTR = "jepalab_spec"
T = TypeVar("T", bound=type)


def _plain(value: Any, owner: nn.Module, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Sequence) and not isinstance(value, str):  # also OmegaConf lists
        return [_plain(v, owner, where) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, owner, where) for k, v in value.items()}
    if isinstance(value, nn.Module):
        path = next((n for n, m in owner.named_modules() if m is value and n), None)
        if path is None or getattr(value, SPEC_ATTR, None) is None:
            return {"$unrecorded": type(value).__name__}
        return {"$module": path}
    return {"$unrecorded": type(value).__name__}


def records_arguments(cls: T) -> T:
    """Class decorator: after ``__init__``, store the full call as ``self.jepalab_spec``.

    The outermost decorated class of an instance wins (a subclass records its own call).
    """
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if type(self) is not cls and _decorated(type(self)):
            return  # the subclass's own wrapper records its call
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop("self", None)
        extra = arguments.pop("kwargs", None) if _has_var_kwargs(signature) else None
        if extra:
            arguments.update(extra)
        object.__setattr__(
            self,
            SPEC_ATTR,
            {
                "class": f"{cls.__module__}.{cls.__qualname__}",
                "name": None,
                "kwargs": {k: _plain(v, self, k) for k, v in arguments.items()},
            },
        )

    cls.__init__ = __init__  # type: ignore[method-assign]
    cls._jepalab_records = cls  # type: ignore[attr-defined]
    return cls


def _decorated(cls: type) -> bool:
    return cls.__dict__.get("_jepalab_records") is cls


def _has_var_kwargs(signature: inspect.Signature) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())


def spec_of(module: nn.Module) -> dict[str, Any] | None:
    """The recorded constructor call of ``module`` (``None`` if its class records none)."""
    spec = getattr(module, SPEC_ATTR, None)
    return None if spec is None else {**spec, "kwargs": dict(spec["kwargs"])}


def set_registry_name(module: nn.Module, name: str) -> None:
    """Note the registry name a model was created under (``create_encoder(name, ...)``)."""
    spec = getattr(module, SPEC_ATTR, None)
    if spec is not None:
        spec["name"] = name


def module_specs(root: nn.Module) -> dict[str, dict[str, Any]]:
    """``{submodule path: spec}`` for every recorded module of ``root`` (``""`` for the root
    itself), outermost first; modules inside a recorded module are rebuilt by it, so they
    are left out. Unwrapped from ``torch.compile`` / DDP prefixes by the caller."""
    specs: dict[str, dict[str, Any]] = {}
    for path, module in root.named_modules():
        spec = spec_of(module)
        if spec is not None and not _rebuilt_by(specs, path):
            specs[path] = spec
    return specs


def _rebuilt_by(specs: Mapping[str, Mapping[str, Any]], path: str) -> bool:
    """Whether a module already recorded in ``specs`` builds the submodule at ``path``:
    one that contains it, or the root when its arguments do not pass it in."""
    inside_recorded = any(path.startswith(f"{done}.") for done in specs if done)
    built_by_root = path != "" and "" in specs and not _referenced(specs[""], path)
    return inside_recorded or built_by_root


def _referenced(spec: Mapping[str, Any], path: str) -> bool:
    """Whether ``spec``'s arguments refer to the submodule at ``path`` (or an ancestor)."""
    refs = [v["$module"] for v in spec["kwargs"].values() if isinstance(v, dict) and "$module" in v]
    return any(path == r for r in refs)


def unrecorded(specs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """``path.argument`` of every argument that could not be stored (not rebuildable)."""
    return [
        f"{path or '<root>'}.{key}"
        for path, spec in specs.items()
        for key, value in spec["kwargs"].items()
        if isinstance(value, dict) and "$unrecorded" in value
    ]


def _class(path: str) -> type:
    module_name, _, qualname = path.rpartition(".")
    if not module_name.startswith("jepalab."):
        raise CheckpointError(f"refusing to build {path!r}: only jepalab classes are rebuilt")
    try:
        cls = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(f"{path!r} does not exist in this version of jepalab") from err
    if not _decorated(cls):
        raise CheckpointError(f"{path!r} is not a class jepalab rebuilds from a checkpoint")
    return cls


def build_from_spec(spec: Mapping[str, Any], modules: Mapping[str, nn.Module] | None = None):
    """Rebuild one module from its spec; ``modules`` resolves ``{"$module": path}`` references.

    A spec with a registry ``name`` is rebuilt through that registry (so a subclass or a
    builder with extra logic comes back the same); otherwise by its class.
    """
    kwargs: dict[str, Any] = {}
    for key, value in spec["kwargs"].items():
        if isinstance(value, dict) and "$module" in value:
            if modules is None or value["$module"] not in modules:
                raise CheckpointError(f"argument {key!r} refers to a missing {value['$module']!r}")
            value = modules[value["$module"]]
        elif isinstance(value, dict) and "$unrecorded" in value:
            raise CheckpointError(
                f"{spec['class']} argument {key!r} (a {value['$unrecorded']}) was not recorded; "
                "the module cannot be rebuilt from its checkpoint"
            )
        kwargs[key] = value
    cls = _class(spec["class"])
    return cls(**kwargs)


def build_from_specs(specs: Mapping[str, Mapping[str, Any]]) -> nn.Module:
    """Rebuild the module tree recorded by :func:`module_specs` (the root, ``""``, last)."""
    built: dict[str, nn.Module] = {}
    for path in sorted((p for p in specs if p), key=lambda p: -p.count(".")):
        built[path] = build_from_spec(specs[path], built)
    if "" not in specs:
        raise CheckpointError("the checkpoint records no root module to rebuild")
    return build_from_spec(specs[""], built)


__all__ = [
    "SPEC_ATTR",
    "build_from_spec",
    "build_from_specs",
    "module_specs",
    "records_arguments",
    "set_registry_name",
    "spec_of",
    "unrecorded",
]
