"""Helpers for the dataclass configs (ARPG, VQ, training): type checks, strict construction from dicts,
named presets with overrides."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ARPGError

_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def check_field_types(obj: Any) -> list[str]:
    """Problems with a dataclass's field values against their annotations (``int``, ``float``, ``str``,
    ``bool``, optionally ``| None``), so that e.g. ``dim="abc"`` from a command line is one clear line."""
    problems = []
    for f in dataclasses.fields(obj):
        ann = str(f.type).replace(" ", "")
        nullable = ann.endswith("|None")
        base = ann[:-5] if nullable else ann
        if base not in _TYPES:
            continue
        v = getattr(obj, f.name)
        if v is None and nullable:
            continue
        ok = isinstance(v, _TYPES[base]) and (base == "bool" or not isinstance(v, bool))
        if not ok:
            problems.append(f"{f.name} must be {'an integer' if base == 'int' else 'a ' + base}"
                            f"{' or null' if nullable else ''} (got {v!r})")
    return problems


def from_dict_strict(cls: type, d: dict[str, Any]) -> Any:
    """``cls(**d)``, refusing keys that are not fields of the dataclass ``cls`` (one line naming them)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ARPGError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
    return cls(**d)


def preset_params(table: dict[str, dict[str, Any]], config_cls: type, name: str, overrides: dict[str, Any],
                  what: str = "preset") -> dict[str, Any]:
    """The parameters of ``table[name]`` (case-insensitive) merged with ``overrides``, all validated."""
    key = {k.lower(): k for k in table}.get(name.lower())
    if key is None:
        raise ARPGError(f"unknown {what} {name!r}; choose one of: {', '.join(table)}")
    fields = {f.name for f in dataclasses.fields(config_cls)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ARPGError(f"unknown override(s) {', '.join(bad)} for {what} {key}; valid fields: {', '.join(sorted(fields))}")
    return {**table[key], **overrides}
