"""One registry type for every pluggable component (timm's ``register_model`` idea).

Encoders, predictors, mask generators, datasets, methods, regularisers, planners and probes
each keep a :class:`Registry`; a component's module registers its builder next to its
code, and a config names it (``encoder.name``, ``mask.name``, ``method.name``, ...):

>>> MASKS = Registry("mask generator", key="mask.name")
>>> @MASKS.register("multiblock")
... def build_multiblock(cfg, grid_size): ...
>>> MASKS.get("multiblock")  # the builder; an unknown name lists the registered ones
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[F]):
    """Names -> builders (classes or functions) of one kind of component.

    Args:
        kind: what is registered, for messages ("encoder", "dataset", ...).
        key: the config key that names one (``"encoder.name"``), for messages.
    """

    def __init__(self, kind: str, key: str | None = None) -> None:
        self.kind, self.key = kind, key
        self._builders: dict[str, F] = {}

    @overload
    def register(self, name: F) -> F: ...

    @overload
    def register(self, name: str | None = None) -> Callable[[F], F]: ...

    def register(self, name: str | F | None = None) -> Any:
        """Decorator registering a builder under ``name`` (default: its ``__name__``);
        bare (``@REG.register``) or with a name (``@REG.register("ijepa")``). A name is
        registered once: silent replacement would make a config build something else
        depending on import order."""
        if callable(name):
            return self._add(name.__name__, name)
        return lambda builder: self._add(name or builder.__name__, builder)

    def _add(self, name: str, builder: F) -> F:
        if name in self._builders:
            raise ValueError(
                f"{self.kind} {name!r} is already registered to {self._builders[name]!r}; "
                "choose a different name"
            )
        self._builders[name] = builder
        return builder

    def get(self, name: str) -> F:
        """The builder registered as ``name``; an unknown name raises ``ValueError`` listing
        similar and all registered names."""
        if name not in self._builders:
            where = f" ({self.key}={name!r})" if self.key else ""
            close = fnmatch.filter(self._builders, f"*{name.split('_')[0]}*")
            hint = f" Similar: {close}." if close else ""
            raise ValueError(
                f"unknown {self.kind} {name!r}{where}.{hint} Available: {self.names()}"
            )
        return self._builders[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the builder registered as ``name``."""
        return self.get(name)(*args, **kwargs)

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names, sorted, optionally filtered by a shell-style ``pattern``."""
        names = sorted(self._builders)
        return fnmatch.filter(names, pattern) if pattern else names

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests that register a temporary component)."""
        self._builders.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._builders)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


__all__ = ["Registry"]
