"""A small name -> factory registry, shared by metrics, tasks, surrogates and samplers.

Modelled on timm's ``register_model`` / ``create_model``: one decorator to register, ``names()``
to enumerate, ``create()`` that fails with the list of known names on a typo.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the sentence as written
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps a registry key to a factory (a class or a function) that builds a ``T``.

    Example::

        METRICS = Registry[Metric]("metric")

        @METRICS.register("edit_distance")
        class EditDistance(Metric): ...

        METRICS.create("edit_distance")
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories and not overwrite and self._factories[name] is not factory:
                raise ValueError(f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        return sorted(self._factories)

    def in_order(self) -> list[str]:
        """Names in the order they were registered (built-ins first, then a user's plugins)."""
        return list(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            close = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}.{hint}") from None

    def create(self, name: str, **options: Any) -> T:
        return self.get(name)(**options)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
