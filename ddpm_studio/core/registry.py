"""Looking a name up in one of the named tables (samplers, model presets) with an error a user can act on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """``table[name]``; a ValueError that names the choices (``Unknown sampler 'x'; choose one of ...``) otherwise."""
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"Unknown {what} {name!r}; choose one of {', '.join(table)}") from None
