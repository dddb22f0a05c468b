"""One way to build a matcher: options checked at the registry against the method's config fields and types, the
same message in register, match and benchmark; stages configured through the same options."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import DEMO_OPTICAL, DEMO_SAR

from osreg.cli import main
from osreg.errors import InputError, MethodOptionError
from osreg.matchers import build_matcher, method_options, method_setup, setup_from_spec
from osreg.matchers.global_search import GlobalSearchConfig, GlobalSearchStage
from osreg.matchers.search import SearchConfig, SearchStage
from osreg.matchers.template_refine import TemplateRefineConfig


def run(*args):
    return CliRunner().invoke(main, ["-q", *(str(a) for a in args)], catch_exceptions=False)


def test_options_are_typed_and_routed_to_the_matcher_or_a_stage():
    s = setup_from_spec("tar[use_text=false,max_side=384,scales=0.7;1.4,template_radius=8]")
    assert s.name == "tar" and dict(s.options) == {"use_text": False, "max_side": 384}
    # a grid setting switches TAR to its grid search (early stop at 80 inliers), scales changed; refinement radius 8
    assert s.search == "grid" and s.grid == SearchConfig(scales=(0.7, 1.4), accept_inliers=80, accept_ratio=0.5)
    assert s.template_refine == TemplateRefineConfig(radius=8)
    plain = method_setup("sift")
    assert plain.search == "off" and plain.template_refine is None and plain.options == ()
    assert not isinstance(build_matcher(plain), (SearchStage, GlobalSearchStage))
    # any method can take the stages: a grid setting implies the grid search, a global one the global search
    s = method_setup("sift", {"template_refine": True, "rotations": "0;180"})
    assert s.search == "grid" and s.grid == SearchConfig(rotations=(0.0, 180.0))
    assert s.template_refine == TemplateRefineConfig()
    assert isinstance(build_matcher(s), SearchStage) and build_matcher(s).inner.name == "sift"
    s = method_setup("sift", {"search": "true", "global_candidates": "4"})
    assert s.search == "global" and s.global_search == GlobalSearchConfig(candidates=4)
    assert isinstance(build_matcher(s), GlobalSearchStage)
    # a method's own global search defaults (CSTF: verified by CFOG), overridable like any option
    assert method_setup("cstf").global_search == GlobalSearchConfig(verifier="cfog")
    assert method_setup("cstf", {"global_verifier": "self", "global_candidates": "4"}).global_search == \
        GlobalSearchConfig(candidates=4)
    assert method_setup("tar", {"search": False, "template_refine": False}).search == "off"
    # TAR searches like CSTF by default: global, verified by CFOG, off with a usable georeference
    tar = method_setup("tar")
    assert tar.search == "auto" and tar.global_search == GlobalSearchConfig(verifier="cfog")
    assert isinstance(build_matcher(tar), GlobalSearchStage) and not isinstance(build_matcher(tar, True),
                                                                               (SearchStage, GlobalSearchStage))
    # auto (CFOG's default): the global search without a usable georeference, none with one
    auto = method_setup("cfog")
    assert auto.search == "auto" and auto.search_kind(georeferenced=True) == "off"
    assert isinstance(build_matcher(auto), GlobalSearchStage)
    assert not isinstance(build_matcher(auto, georeferenced=True), GlobalSearchStage)


@pytest.mark.parametrize("spec,message", [
    ("cfog[foo=1]", r"^method 'cfog' has no option 'foo'; valid options: n_orientations \(int, default 9\), "
                    r"sigma \(float, default 0.8\), template_size \(int, default 48\), .*"
                    r"search \(str, default 'auto'\)"),
    ("sift[ratoi=0.8]", r"^method 'sift' has no option 'ratoi'; valid options: max_keypoints \(int, default 2000\), "
                        r"ratio \(float, default 0.9\)"),
    ("cfog[template_size=abc]", r"^option 'template_size' of method 'cfog' must be int, got 'abc'; valid options: "
                                r"n_orientations \(int, default 9\)"),
    ("tar[use_text=maybe]", r"^option 'use_text' of method 'tar' must be bool, got 'maybe'"),
    ("tar[d_model=64]", r"^method 'tar' has no option 'd_model'; valid options: weights \(str or none, default None\)"),
    ("tar[scales=big]", r"^option 'scales' of method 'tar' must be list of float \(a;b;...\), got 'big'"),
    ("sift[search=false,rotations=90]", r"^grid search options \['rotations'\] were given with search=off$"),
    ("sift[search=maybe]", r"^option 'search' of method 'sift' must be one of off, global, grid, auto \(or true / "
                           r"false\), got 'maybe'$"),
    ("cfog[rotations=90,global_candidates=3]", r"^grid search options \['rotations'\] and global search options "
                                               r"\['global_candidates'\] exclude each other$"),
])
def test_bad_options_are_refused_with_the_valid_ones_and_their_types(spec, message):
    with pytest.raises(MethodOptionError, match=message):
        setup_from_spec(spec)


def test_bad_values_are_refused_by_the_configs_before_anything_runs():
    with pytest.raises(InputError, match="fine_window must be odd, got 6"):
        setup_from_spec("tar[fine_window=6]")
    with pytest.raises(InputError, match=r"^template_radius must be at least 2 px, got 1$"):
        setup_from_spec("cfog[template_radius=1]")


def test_every_method_lists_its_options_with_types_and_defaults():
    opts = {o.name: o for o in method_options("promptmid")}
    assert opts["coarse_threshold"].default == 1e-4  # the shipped weights' value, not the untrained default
    # PromptMID as TAR: the global search verified by CFOG without a georeference, then template refinement
    assert opts["search"].default == "auto" and opts["template_refine"].default is True
    assert opts["global_verifier"].default == "cfog" and opts["template_radius"].default == 12
    assert opts["sar_prior"].type_name == "str" and opts["weights"].type_name == "str or none"
    res = run("methods")
    assert res.exit_code == 0
    for name in ("sift", "aliked", "disk", "xfeat", "cfog", "rift", "tar", "promptmid", "cstf"):
        assert f"\n{name}: " in "\n" + res.stdout
    assert "needs: nothing beyond osreg's core (no torch)" in res.stdout
    assert "search_radius (int) = 24" in res.stdout and "stages: search auto, template_refine on" in res.stdout
    assert "stages: search auto, template_refine off" in res.stdout  # cfog
    res = run("methods", "tar")
    assert res.stdout.startswith("tar: ") and "stage options: search (str) = 'auto'" in res.stdout


@pytest.mark.parametrize("command", ["register", "match", "benchmark"])
def test_a_bad_option_exits_2_with_the_same_message_in_every_command(tmp_path, command):
    if command == "benchmark":
        res = run("benchmark", "--data", tmp_path, "--methods", "sift,cfog[foo=1]", "-o", tmp_path / "rep")
    else:
        out = ["-o", tmp_path / "o"] if command == "register" else []
        res = run(command, DEMO_OPTICAL, DEMO_SAR, "--method", "cfog[foo=1]", *out)
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("Error: method 'cfog' has no option 'foo'; valid options: n_orientations (int, "
                                 "default 9)")
    assert "Traceback" not in res.output and not (tmp_path / "o").exists() and not (tmp_path / "rep").exists()


def test_register_records_the_method_setup_in_the_report(tmp_path):
    res = run("register", DEMO_OPTICAL, DEMO_SAR, "--method", "cfog[template_size=40,template_refine=true]", "-o",
              tmp_path / "o")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["config"]["method"]["options"] == {"template_size": 40}
    assert report["config"]["method"]["search"] == "auto"  # georeferenced demo: no search ran
    assert report["config"]["method"]["template_refine"]["radius"] == 12
    assert report["template_refine"]["template_refine"] in ("applied", "confirmed")
