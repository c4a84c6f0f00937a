from __future__ import annotations

import pytest

from medfusion.registry import Registry


def make() -> Registry:
    registry = Registry("widget")

    @registry.register("round", radius=2)
    def round_widget(radius: int = 1, colour: str = "red") -> tuple[int, str]:
        return radius, colour

    return registry


def test_build_uses_defaults_and_overrides() -> None:
    registry = make()
    assert registry.build("round") == (2, "red")
    assert registry.build("round", radius=5, colour="blue") == (5, "blue")
    assert registry.names() == ["round"] and "round" in registry
    assert registry.parameters("round") == ["radius", "colour"]


def test_unknown_name_lists_known() -> None:
    with pytest.raises(ValueError, match=r"unknown widget 'square'; known: round"):
        make().get("square")


def test_unknown_parameter_lists_accepted() -> None:
    with pytest.raises(ValueError, match=r"widget 'round' got unknown parameter\(s\) \['size'\]; accepted: \['radius', 'colour'\]"):
        make().build("round", size=3)


def test_duplicate_name_is_an_error() -> None:
    registry = make()
    with pytest.raises(ValueError, match="already registered"):
        registry.register("round", lambda: None)
