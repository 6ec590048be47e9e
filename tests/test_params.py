"""Parameter declarations: one ``param(...)`` per parameter generates the validation, the
docstrings, the command-line flags, and decides what the output hash covers."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from sammflow.cli import _build, _pipeline_params, build_parser
from sammflow.params import (
    PRESETS, STAGE_CLASSES, STAGES, AlignParams, AnnotationParams, DetectParams, EncodeParams, FlowParams, GifParams, Param,
    PipelineParams, declared, stable_hash,
)

CLASSES = [AnnotationParams, DetectParams, AlignParams, FlowParams, EncodeParams, GifParams]
#: The parameters that only judge an alignment or pick the hardware: outside the output hash.
NOT_HASHED = {("DetectParams", "device"), ("AlignParams", "min_score"), ("AlignParams", "max_residual")}
#: Every flag of each command, spelled as the README and earlier versions documented them.
FLAGS = {
    "annotations": ["--fix-annotations", "--no-fix-annotations", "--apex", "--megc2019", "--no-megc2019"],
    "detect": ["--device", "--detect-max-side", "--min-prob", "--neighbours", "--min-face"],
    "align": ["--margin", "--crop-size", "--crop-interpolation", "--method", "--motion", "--robust", "--no-robust",
              "--min-score", "--max-residual"],
    "flow": ["--flow-method", "--pyr-scale", "--levels", "--winsize", "--iterations", "--poly-n", "--poly-sigma", "--flow-flags",
             "--tvl1-tau", "--tvl1-lambda", "--tvl1-theta", "--tvl1-scales", "--tvl1-warps", "--tvl1-epsilon", "--tvl1-inner-iterations",
             "--tvl1-outer-iterations", "--tvl1-scale-step", "--tvl1-gamma", "--tvl1-median-filtering",
             "--dis-finest-scale", "--dis-patch-size", "--dis-patch-stride", "--dis-iterations", "--dis-refine-iterations",
             "--dis-refine-alpha", "--dis-refine-delta", "--dis-refine-gamma", "--dis-mean-normalization", "--no-dis-mean-normalization",
             "--dis-spatial-propagation", "--no-dis-spatial-propagation", "--head-motion", "--no-head-motion"],
    "encode": ["--map-size", "--map-interpolation", "--map-channels", "--map-scale", "--map-fixed-scale"],
    "model": ["--preset", "--arrays"],
    "sources": ["--dataset", "--onset", "--offset", "--events"],
    "gif": ["--fps", "--step", "--to-offset", "--no-to-offset", "--gif-size", "--gif-labels", "--no-gif-labels"],
}
COMMON = ["-h", "--help", "--annotations", "-a", "--kind", "--quiet", "-q", "--workers", "-j", "--scheduler", "--force"]
COMMAND_STAGES = {
    "normalize": ["annotations", "detect", "align"],
    "flows": ["model", "flow", "encode"],
    "gif": ["gif", "annotations", "detect", "align"],
    "export": ["sources", "model", "annotations", "detect", "align", "flow", "encode"],
}
#: Values a parameter's bound needs of another one to be valid (a DIS patch stride of 64 px needs patches that large).
COMPANIONS = {"dis_patch_stride": {"dis_patch_size": 64}}


def _all_fields():
    return [(cls, f, p) for cls in CLASSES for f, p in declared(cls)]


def _ids(items):
    return [f"{cls.__name__}.{f.name}" for cls, f, _ in items]


def _other_value(f: dataclasses.Field, p: Param):
    """A valid value other than the default."""
    default = f.default
    if isinstance(default, bool):
        return not default
    candidates = [*p.choices, *p.options]
    if p.slider:
        candidates += [p.slider[1], p.slider[0]]
    if isinstance(default, int):
        candidates += [default + 1, default * 2]
    elif isinstance(default, float):
        candidates += [round(default * 0.75, 6), round(default * 1.25, 6), default + 0.5]
    for value in candidates:
        if value == default or type(value) is not type(default):
            continue
        if p.minimum is not None and value < p.minimum or p.maximum is not None and value > p.maximum:
            continue
        return value
    raise AssertionError(f"no other value found for {f.name}")


# ---------------------------------------------------------------- declarations


def test_every_parameter_is_declared_with_help():
    for cls in CLASSES:
        names = [f.name for f in dataclasses.fields(cls)]
        assert [f.name for f, _ in declared(cls)] == names, cls  # nothing undeclared
        for f, p in declared(cls):
            assert isinstance(p, Param)
            assert p.help.strip() and "\n" not in p.help, f"{cls.__name__}.{f.name} has no one-line help"


def test_docstrings_list_every_parameter_in_a_generated_attributes_section():
    for cls in CLASSES:
        doc = cls.__doc__
        assert "\n    Attributes\n    ----------\n" in doc, cls
        lines = doc.split("    Attributes\n    ----------\n", 1)[1].splitlines()
        entries = {lines[i].split(" : ")[0].strip(): (lines[i], lines[i + 1]) for i in range(0, len(lines) - 1, 2)}
        assert list(entries) == [f.name for f, _ in declared(cls)], cls
        for f, p in declared(cls):
            header, text = entries[f.name]
            assert header == f"    {f.name} : {type(f.default).__name__}, default {f.default!r}"
            assert text.startswith("        ") and text.strip().lower().startswith(p.help.lower()), (cls.__name__, f.name, text)
            assert (" Not part of the output hash." in text) == (not p.output), (cls.__name__, f.name)
            assert text.endswith(" Used when " + " and ".join(f"{k} = {v!r}" for k, v in p.applies) + ".") if p.applies else True


def test_only_device_and_the_quality_thresholds_are_outside_the_hash():
    outside = {(cls.__name__, f.name) for cls, f, p in _all_fields() if not p.output}
    assert outside == NOT_HASHED


def test_defaults_are_the_original_scripts_but_the_map_scale():
    # the original min-max brightness scale is --map-scale minmax (issue 10: the robust default)
    assert PipelineParams().output_dict() == {
        "annotations": {"fix": False, "apex": "annotated", "megc2019": False},
        "detect": {"max_side": 640, "min_prob": 0.9, "neighbours": 3, "min_face": 40},
        "align": {"margin": 40, "crop_size": 224, "interpolation": "area", "method": "subpixel", "motion": "translation", "robust": True},
        "flow": {"method": "farneback", "pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2,
                 "flags": 0, "head_motion": False},
        "encode": {"size": 28, "interpolation": "area", "channels": "hsv", "scale": "robust"},
    }
    assert PipelineParams.from_preset("seed") == PipelineParams(preset="seed")
    assert PipelineParams.from_preset("seed").hash == PipelineParams().hash
    assert PipelineParams().judging_dict() == {"detect": {"device": "cpu"}, "align": {"min_score": 0.8, "max_residual": 0.2}}


# ---------------------------------------------------------------- validation generated from the declarations


def _bad_values(f: dataclasses.Field, p: Param):
    """Values the declaration rules out, with the start of the message expected."""
    bad = []
    if p.choices:
        wrong = "bogus" if isinstance(f.default, str) else 12345
        bad.append((wrong, f"{f.name} must be one of {list(p.choices)}, got {wrong!r}"))
    if p.minimum is not None and p.maximum is not None:
        bad.append((type(f.default)(p.minimum - 1), f"{f.name} must be in [{p.minimum:g}, {p.maximum:g}], got"))
        bad.append((type(f.default)(p.maximum + 1), f"{f.name} must be in [{p.minimum:g}, {p.maximum:g}], got"))
    elif p.minimum is not None:
        bad.append((type(f.default)(p.minimum - 1), f"{f.name} must be >= {p.minimum:g}, got"))
    elif p.maximum is not None:
        bad.append((type(f.default)(p.maximum + 1), f"{f.name} must be <= {p.maximum:g}, got"))
    return bad


CHECKED = [(cls, f, p) for cls, f, p in _all_fields() if p.choices or p.minimum is not None or p.maximum is not None]


@pytest.mark.parametrize("cls, f, p", CHECKED, ids=_ids(CHECKED))
def test_declared_ranges_and_choices_are_enforced_naming_the_field(cls, f, p):
    bad = _bad_values(f, p)
    assert bad
    for value, message in bad:
        with pytest.raises(ValueError) as raised:
            cls(**{f.name: value})
        assert str(raised.value).startswith(message), (value, str(raised.value))
    for bound in (p.minimum, p.maximum):  # the bounds themselves are valid (inclusive)
        if bound is not None:
            assert getattr(cls(**{**COMPANIONS.get(f.name, {}), f.name: type(f.default)(bound)}), f.name) == bound


def test_the_checks_declarations_cannot_express():
    cases = [
        (DetectParams, {"max_side": 32}, "max_side must be 0 or >= 64, got 32"),
        (AlignParams, {"max_residual": 0.0}, "max_residual must be > 0, got 0.0"),
        (FlowParams, {"pyr_scale": 1.0}, "pyr_scale must be in (0, 1), got 1.0"),
        (FlowParams, {"winsize": 14}, "winsize must be odd (OpenCV averages over winsize + 1 px when it is even: 14 would give the flow of 15), got 14"),
        (FlowParams, {"flags": 1}, "flags must be one of [0, 256], got 1"),
        (FlowParams, {"dis_patch_size": 4, "dis_patch_stride": 5}, "dis_patch_stride must be <= dis_patch_size (4), got 5"),
    ]
    for cls, kwargs, message in cases:
        with pytest.raises(ValueError) as raised:
            cls(**kwargs)
        assert str(raised.value) == message
    DetectParams(max_side=0), DetectParams(max_side=64), FlowParams(flags=256)  # valid


# ---------------------------------------------------------------- the hash


def test_hash_is_stable():
    # pinned: every output folder's params.json and every cache entry is keyed by these
    assert PipelineParams().hash == stable_hash({"PipelineParams": PipelineParams().output_dict()})
    assert len(PipelineParams().hash) == 12 and int(PipelineParams().hash, 16) >= 0
    assert PipelineParams().hash == PipelineParams().hash == PipelineParams.from_dict(PipelineParams().to_dict()).hash
    assert stable_hash({"b": 1, "a": [1, 2]}) == stable_hash({"a": [1, 2], "b": 1})  # key order does not matter
    # 3bc4a220fbd7 before issue 11 (no annotation stage, flow method, map channels), e1c5f3eb0c0d before issue 12
    # (--megc2019); an older params.json
    # still resumes: a parameter it lacks counts as its default (sammflow.manifest.differences)
    assert PipelineParams().hash == "4bce8a851cf4"
    assert [cls().hash for cls in CLASSES] == ["4b560d070257", "9047a46927a3", "81b65edbdce8", "8d44cbd4f9fd", "593ffaa1d834", "1915364e6a2e"]


HASHED = [(cls, f, p) for cls, f, p in _all_fields() if p.output]
UNHASHED = [(cls, f, p) for cls, f, p in _all_fields() if not p.output]


@pytest.mark.parametrize("cls, f, p", HASHED, ids=_ids(HASHED))
def test_changing_an_output_parameter_changes_the_hash(cls, f, p):
    where = dict(p.applies)  # the values under which the parameter has an effect (its method, its scale)
    changed = cls(**{**where, f.name: _other_value(f, p)})
    assert changed.hash != cls(**where).hash
    stage = next((s for s, c in STAGE_CLASSES.items() if c is cls), None)
    if stage is not None:
        assert PipelineParams(**{stage: changed}).hash != PipelineParams(**{stage: cls(**where)}).hash
        assert PipelineParams(**{stage: changed}).output_dict() != PipelineParams(**{stage: cls(**where)}).output_dict()


INACTIVE = [(cls, f, p) for cls, f, p in HASHED if p.applies and not cls().active(f.name)]


@pytest.mark.parametrize("cls, f, p", INACTIVE, ids=_ids(INACTIVE))
def test_a_parameter_without_effect_leaves_the_hash_alone(cls, f, p):
    # a TV-L1 parameter under Farnebäck (the default), the fixed scale under the robust one: no output changes
    changed = cls(**{f.name: _other_value(f, p)})
    assert changed != cls() and changed.hash == cls().hash and f.name not in changed.output_dict()


def test_presets_set_their_values_and_flags_override_them():
    for name, preset in PRESETS.items():
        params = PipelineParams.from_preset(name)
        assert params.preset == name and params.preset_changes() == [] and preset.basis and preset.title
        for stage, values in preset.values.items():
            assert {k: getattr(getattr(params, stage), k) for k in values} == values
    ststnet = PipelineParams.from_preset("ststnet")
    assert (ststnet.flow.method, ststnet.encode.channels, ststnet.encode.size) == ("tvl1", "uvs", 28)
    offapexnet = PipelineParams.from_preset("offapexnet")
    assert (offapexnet.flow.method, offapexnet.encode.channels, offapexnet.encode.size) == ("tvl1", "uv", 28)
    changed = PipelineParams.from_preset("ststnet", {"flow": {"tvl1_warps": 3}, "align": {"margin": 20}})
    assert changed.flow.method == "tvl1" and changed.flow.tvl1_warps == 3
    assert changed.preset_changes() == ["align.margin", "flow.tvl1_warps"]
    assert changed.hash != ststnet.hash and PipelineParams(preset="ststnet").hash == PipelineParams().hash  # the values count, not the name
    with pytest.raises(ValueError, match="preset must be one of"):
        PipelineParams.from_preset("htnet")


@pytest.mark.parametrize("cls, f, p", UNHASHED, ids=_ids(UNHASHED))
def test_device_and_thresholds_leave_the_hash_alone(cls, f, p):
    value = "cuda:0" if f.name == "device" else _other_value(f, p)
    changed = cls(**{f.name: value})
    assert changed != cls() and changed.hash == cls().hash
    stage = next(s for s, c in STAGE_CLASSES.items() if c is cls)
    pipeline = PipelineParams(**{stage: changed})
    assert pipeline.hash == PipelineParams().hash and pipeline.output_dict() == PipelineParams().output_dict()
    assert pipeline.judging_dict()[stage][f.name] == value


def test_every_stage_contributes_to_the_pipeline_hash():
    assert set(PipelineParams().to_dict()) == set(STAGES) == set(STAGE_CLASSES)
    stage_hashes = {stage: getattr(PipelineParams(), stage).hash for stage in STAGES}
    assert len(set(stage_hashes.values())) == len(STAGES)  # the class name is part of each stage's hash


def test_dicts_round_trip():
    params = PipelineParams(detect=DetectParams(device="cuda:1", min_face=60), align=AlignParams(min_score=0.5, margin=20),
                            flow=FlowParams(head_motion=True), encode=EncodeParams(size=32))
    assert PipelineParams.from_dict(params.to_dict()) == params
    merged = {stage: {**params.output_dict()[stage], **params.judging_dict().get(stage, {})} for stage in STAGES}
    assert PipelineParams.from_dict(merged) == params
    # an output-only dict (params.json's "params") gets the default device and thresholds back
    assert PipelineParams.from_dict(params.output_dict()).hash == params.hash
    for stage in STAGES:
        inactive = {f.name for f, _ in declared(STAGE_CLASSES[stage]) if not getattr(params, stage).active(f.name)}
        assert set(params.output_dict()[stage]) | set(params.judging_dict().get(stage, {})) | inactive == set(params.to_dict()[stage])
        assert not set(params.output_dict()[stage]) & set(params.judging_dict().get(stage, {}))


# ---------------------------------------------------------------- command-line flags generated from the declarations


def _subcommands():
    parser = build_parser()
    actions = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return actions.choices


@pytest.mark.parametrize("command", COMMAND_STAGES)
def test_cli_flags_are_the_documented_spellings(command):
    parser = _subcommands()[command]
    flags = {option for action in parser._actions for option in action.option_strings}
    expected = set(COMMON) | {flag for stage in COMMAND_STAGES[command] for flag in FLAGS[stage]} | ({"--clip", "-c"} if command == "gif" else set())
    assert flags == expected


def test_cli_flags_carry_the_declared_help_and_defaults():
    parser = _subcommands()["export"]
    by_dest = {a.dest: a for a in parser._actions}
    for cls in STAGE_CLASSES.values():
        for f, p in declared(cls):
            action = by_dest[f"{cls.__name__}.{f.name}"]
            # not given = absent (the preset's value, else the default, applies)
            assert action.default is argparse.SUPPRESS and p.help in action.help and f"(default: {f.default}" in action.help
            if p.flag:
                assert action.option_strings[0] == f"--{p.flag}"


def test_cli_flags_set_their_parameter():
    args = build_parser().parse_args([
        "export", "DATA", "OUT", "--detect-max-side", "320", "--crop-interpolation", "cubic", "--flow-flags", "256", "--map-size", "32",
        "--map-interpolation", "linear", "--device", "cuda:0", "--min-score", "0.5", "--max-residual", "0.3", "--margin", "20",
        "--crop-size", "160", "--method", "whole_pixel", "--motion", "similarity", "--no-robust", "--winsize", "21", "--head-motion",
    ])
    assert _pipeline_params(args) == PipelineParams(
        detect=DetectParams(max_side=320, device="cuda:0"),
        align=AlignParams(interpolation="cubic", min_score=0.5, max_residual=0.3, margin=20, crop_size=160, method="whole_pixel",
                          motion="similarity", robust=False),
        flow=FlowParams(flags=256, winsize=21, head_motion=True),
        encode=EncodeParams(size=32, interpolation="linear"), preset="seed",
    )
    assert _pipeline_params(build_parser().parse_args(["export", "DATA", "OUT"])) == PipelineParams(preset="seed")
    ststnet = build_parser().parse_args(["export", "DATA", "OUT", "--preset", "ststnet", "--tvl1-warps", "3", "--apex", "auto"])
    assert _pipeline_params(ststnet) == PipelineParams.from_preset(
        "ststnet", {"flow": {"tvl1_warps": 3}, "annotations": {"apex": "auto"}})
    explicit = build_parser().parse_args(["export", "DATA", "OUT", "--preset", "ststnet", "--flow-method", "farneback"])
    assert _pipeline_params(explicit).flow.method == "farneback" and _pipeline_params(explicit).preset_changes() == ["flow.method"]
    gif = build_parser().parse_args(["gif", "DATA", "OUT", "--gif-size", "96", "--fps", "5", "--step", "2", "--to-offset"])
    assert _build(GifParams, gif) == GifParams(size=96, fps=5.0, step=2, to_offset=True)
    # a command without flow flags still builds a complete parameter set, with the defaults
    assert _pipeline_params(build_parser().parse_args(["normalize", "DATA", "OUT", "--margin", "10"])) == PipelineParams(
        align=AlignParams(margin=10))


def test_applied_fixes_are_hashed_with_the_version_of_their_table(monkeypatch):
    import sammflow.fixes

    fixed = PipelineParams(annotations=AnnotationParams(fix=True))
    assert fixed.output_dict()["annotations"] == {"fix": True, "apex": "annotated", "megc2019": False,
                                                  "fixes_version": sammflow.fixes.FIXES_VERSION}
    assert "fixes_version" not in PipelineParams().output_dict()["annotations"]
    before = fixed.hash
    monkeypatch.setattr(sammflow.fixes, "FIXES_VERSION", "2099.1.1")
    assert fixed.hash != before  # a new table makes other outputs: another folder, another cache key
    assert PipelineParams.from_dict(fixed.output_dict()) == fixed  # read back from a params.json
