from __future__ import annotations

import pytest

from surrogate_search.registry import Registry, UnknownNameError


def test_registry_creates_by_name_and_lists_names() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register("round")
    def make_round(radius: float = 1.0) -> dict[str, float]:
        return {"radius": radius}

    assert reg.names() == ["round"]
    assert reg.create("round", radius=2.0) == {"radius": 2.0}
    assert "round" in reg


def test_unknown_name_lists_known_names_and_suggests() -> None:
    reg: Registry[object] = Registry("widget")
    reg.register("square")(dict)
    reg.register("circle")(dict)
    with pytest.raises(UnknownNameError) as err:
        reg.create("cirlce")
    message = str(err.value)
    assert "unknown widget 'cirlce'" in message
    assert "circle, square" in message
    assert "Did you mean 'circle'?" in message


def test_registering_a_different_factory_twice_is_an_error() -> None:
    reg: Registry[object] = Registry("widget")
    reg.register("a")(dict)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(list)
    reg.register("a", overwrite=True)(list)
    assert reg.create("a") == []
