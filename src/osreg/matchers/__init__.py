"""Matchers behind one contract (see :mod:`osreg.matchers.base`) and their registry."""

from __future__ import annotations

import importlib
from typing import Any

from osreg.errors import InputError, UnknownMethodError
from osreg.matchers.base import Matcher

# name -> (module, class); imported lazily so that `osreg match --method sift` never loads torch
_REGISTRY: dict[str, tuple[str, str]] = {
    "sift": ("osreg.matchers.sift", "SIFTMatcher"),
    "aliked": ("osreg.matchers.lightglue", "ALIKEDLightGlueMatcher"),
    "disk": ("osreg.matchers.lightglue", "DISKLightGlueMatcher"),
    "xfeat": ("osreg.matchers.xfeat", "XFeatMatcher"),
    "cfog": ("osreg.matchers.cfog", "CFOGMatcher"),
    "rift": ("osreg.matchers.rift", "RIFTMatcher"),
    "tar": ("osreg.matchers.tar", "TARMatcher"),
    "promptmid": ("osreg.matchers.promptmid", "PromptMIDMatcher"),
}

BASELINES = ("sift", "aliked", "disk", "xfeat", "cfog", "rift")


def available_methods() -> list[str]:
    """Names accepted by :func:`create_matcher`."""
    return list(_REGISTRY)


def resolve_method(name: str) -> str:
    """The registry key of a method name (case and spaces ignored).

    Raises:
        UnknownMethodError: for a name osreg does not know.
    """
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise UnknownMethodError(f"unknown method {name!r}; available methods: {', '.join(_REGISTRY)}")
    return key


def create_matcher(name: str, **options) -> Matcher:
    """Build a matcher by name.

    Args:
        name: one of :func:`available_methods`.
        **options: fields of the method's config dataclass.

    Raises:
        UnknownMethodError: for a name osreg does not know.
    """
    module, cls = _REGISTRY[resolve_method(name)]
    return getattr(importlib.import_module(module), cls)(**options)


def parse_method_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name[key=value,key=value]`` -> (name, options); values are read as bool, int, float or str."""
    spec = spec.strip()
    if "[" not in spec:
        return spec, {}
    if not spec.endswith("]"):
        raise InputError(f"bad method spec {spec!r}; expected name or name[key=value,...]")
    name, body = spec[:-1].split("[", 1)
    opts: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        if "=" not in item:
            raise InputError(f"bad option {item!r} in method spec {spec!r}; expected key=value")
        k, v = item.split("=", 1)
        low = v.strip().lower()
        val: Any = v.strip()
        if low in ("true", "false"):
            val = low == "true"
        else:
            for cast in (int, float):
                try:
                    val = cast(v)
                    break
                except ValueError:
                    pass
        opts[k.strip()] = val
    return name.strip(), opts


__all__ = ["BASELINES", "Matcher", "available_methods", "create_matcher", "resolve_method"]
