"""Heads by name: `create_head(name, in_features, num_classes, **options)` and `list_heads()`."""

from __future__ import annotations

from collections.abc import Callable

from slac.errors import ConfigError
from slac.heads.base import Head

__all__ = ["create_head", "list_heads", "register_head"]

_HEADS: dict[str, Callable[..., Head]] = {}


def register_head(name: str) -> Callable[[Callable[..., Head]], Callable[..., Head]]:
    """Decorator registering a factory `fn(in_features, num_classes, **options) -> Head` under `name`."""

    def decorator(factory: Callable[..., Head]) -> Callable[..., Head]:
        if name in _HEADS:
            raise ValueError(f"a head named {name!r} is already registered")
        _HEADS[name] = factory
        return factory

    return decorator


def list_heads() -> list[str]:
    """The registered head names, sorted."""
    return sorted(_HEADS)


def create_head(name: str, in_features: int, num_classes: int, **options) -> Head:
    """Build the head registered as `name` (see `list_heads()`) with its options.

    Options are the keyword arguments of the head's class; an unknown option is a TypeError naming it.
    The head's ``head_name`` is the registered name of what it computes ("sl" for a "slac" head with
    ``angle_weight=0``).
    """
    try:
        factory = _HEADS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown head {name!r}; known heads: {', '.join(list_heads())}") from None
    head = factory(in_features, num_classes, **options)
    if head.head_name is None:  # a registered class of one's own that does not name itself
        head.head_name = name
    return head
