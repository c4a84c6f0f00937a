"""A small name -> builder registry that fails loudly on unknown names and parameters."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


class Registry:
    """Maps names to builders (classes or functions).

    Example::

        FUSIONS = Registry("fusion")

        @FUSIONS.register("late")
        class LateFusion(nn.Module): ...

        FUSIONS.build("late", rule="average", dims={"text": 8}, num_classes=2)
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}
        self._signatures: dict[str, inspect.Signature] = {}

    def register(self, name: str, builder: Callable[..., Any] | None = None, **defaults: Any):
        """Register ``builder`` under ``name``; usable as a decorator.

        Keyword ``defaults`` are passed to the builder unless overridden.

        Raises:
            ValueError: if ``name`` is already registered.
        """

        def add(obj: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._builders[name] = (lambda **kw: obj(**{**defaults, **kw})) if defaults else obj
            self._signatures[name] = inspect.signature(obj)
            return obj

        return add(builder) if builder is not None else add

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders

    def get(self, name: str) -> Callable[..., Any]:
        """The builder registered under ``name``.

        Raises:
            ValueError: naming the unknown name and listing the known ones.
        """
        if name not in self._builders:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._builders[name]

    def parameters(self, name: str) -> list[str]:
        """Keyword parameters accepted by the builder registered under ``name``."""
        self.get(name)
        return [p for p in self._signatures[name].parameters if p not in ("self", "args", "kwargs")]

    def build(self, name: str, **params: Any) -> Any:
        """Build ``name`` with ``params``.

        Raises:
            ValueError: on an unknown name, or a parameter the builder does not accept.
        """
        builder = self.get(name)
        accepted = self.parameters(name)
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(
                f"{self.kind} {name!r} got unknown parameter(s) {unknown}; accepted: {accepted}"
            )
        return builder(**params)
