"""Matchers behind one contract (see :mod:`osreg.matchers.base`) and their registry."""

from __future__ import annotations

import importlib

from osreg.errors import UnknownMethodError
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


__all__ = ["Matcher", "create_matcher", "resolve_method", "available_methods", "BASELINES"]
