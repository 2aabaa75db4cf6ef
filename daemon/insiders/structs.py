"""Copying one record into another type by field name, strictly: where the daemon's own records
become what leaves it (a control reply, a mirror's manifest), so that each side can change its
names without changing the other's silently."""

from __future__ import annotations

import functools
from typing import TypeVar

import msgspec

Struct = TypeVar("Struct", bound=msgspec.Struct)


def copied(kind: type[Struct], source: object, **given: object) -> Struct:
    """A `kind` whose fields are read from `source`'s attributes of the same name, unless `given`.
    A field `source` has no attribute for raises at once (unlike msgspec's from_attributes, which
    would leave it at its default): renaming a field on either side fails every test that makes
    one, and never changes what goes out silently."""
    values = {}
    for name, default in _defaults(kind):
        if name in given:
            value = given[name]
        elif hasattr(source, name):
            value = getattr(source, name)
        else:
            raise TypeError(f"{type(source).__name__} has no {name} for {kind.__name__}")
        # A value equal to the default is left to it: omit_defaults then omits it from the bytes
        # as for a record made here (msgspec tells a default by identity, not by equality).
        if default is msgspec.NODEFAULT or value != default:
            values[name] = value
    return kind(**values)


@functools.cache
def _defaults(kind: type[msgspec.Struct]) -> tuple[tuple[str, object], ...]:
    return tuple((field.name, field.default) for field in msgspec.structs.fields(kind))
