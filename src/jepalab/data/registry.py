"""The dataset registry: ``data.name`` -> a dataset class or factory, registered next to
its code with ``@register_dataset("name")``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from jepalab.errors import ArgumentError
from jepalab.registry import Registry

_F = TypeVar("_F", bound=Callable[..., Any])

DATASETS: Registry = Registry("dataset", key="data.name")


def register_dataset(name: str) -> Callable[[_F], _F]:
    """Decorator registering a dataset class or factory under ``name`` (``data.name``);
    a name is registered once (``ValueError`` otherwise)."""
    return DATASETS.register(name)


def list_datasets() -> list[str]:
    """Sorted names of all registered datasets."""
    return DATASETS.names()


def create_dataset(name: str, **kwargs: Any) -> Any:
    """Build a registered dataset by name.

    Args:
        name: Registered dataset name, e.g. ``"digits_canvas"``.
        **kwargs: Constructor arguments of that dataset.

    Returns:
        The dataset instance.

    Raises:
        ValueError: If ``name`` is not registered (the message lists the available names).
        ArgumentError: (a ``TypeError``) If ``kwargs`` do not match the constructor (the
            message names the dataset and its accepted arguments).
    """
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}; available datasets: {', '.join(list_datasets())}. "
            "Fix the dataset name in your config or register a new one with @register_dataset."
        )
    factory = DATASETS.get(name)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some C-implemented callables expose no signature
        signature = None
    if signature is not None:
        # Check arguments before calling so that a config typo is reported against the dataset
        # name rather than as a bare TypeError from deep inside a constructor.
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            params = ", ".join(signature.parameters)
            raise ArgumentError(
                f"bad arguments for dataset {name!r} (data.params): {exc}; accepted: {params}"
            ) from None
    return factory(**kwargs)


__all__ = ["DATASETS", "create_dataset", "list_datasets", "register_dataset"]
