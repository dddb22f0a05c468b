"""Serialisation shared by the frozen config dataclasses that are saved inside checkpoints."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

from osreg.errors import InputError

C = TypeVar("C", bound="DictConfig")


class DictConfig:
    """Mixin for frozen dataclasses: ``to_dict`` for checkpoints, ``from_dict`` that refuses unknown fields and
    turns JSON lists back into tuples."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - names
        if unknown:
            raise InputError(f"unknown {cls.__name__} fields {sorted(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
