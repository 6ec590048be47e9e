"""Parameter sets of every pipeline stage: each parameter declared once, with its metadata.

Every parameter is a field of a frozen dataclass declared with ``param(default, help=...)``:
its name, default, valid range or choices, help text, command-line flag and dashboard
widget live in that one declaration. The command line (``sammflow.cli``) and the
dashboard's sidebar (``sammflow.ui``) are generated from it, and so are the "Attributes"
sections of the docstrings below and the validation in ``__post_init__``.

Only what changes output bytes goes into a parameter set's ``hash``, the cache key of every
derived artefact and the identity of an output folder (``params.json``): the torch device
(``DetectParams.device``) and the quality thresholds that only *judge* an alignment
(``AlignParams.min_score`` / ``max_residual``) are declared with ``output=False``, so
changing them keeps a cache warm and an output folder resumable. Defaults reproduce the
original SAMM scripts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import cv2

#: Interpolation names accepted by the resize steps, mapped to OpenCV flags.
INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}


@dataclass(frozen=True)
class Param:
    """What is declared about one parameter besides its name and default.

    Attributes
    ----------
    help : str
        One line, shown by ``--help``, the sidebar and the docstring.
    choices : tuple
        The only valid values (a selectbox in the sidebar).
    minimum, maximum : float, optional
        Valid range, inclusive; ``None`` is unbounded.
    output : bool
        Whether the value changes output bytes (and so belongs in the hash).
    flag : str
        Command-line flag without ``--`` (default: the field name with dashes).
    label : str
        Sidebar label; empty for a parameter the sidebar does not show.
    slider : (low, high, step), optional
        The sidebar slider's range (a narrower, practical part of the valid range).
    options : tuple
        Values the sidebar offers in a selectbox, when not all ``choices``.
    key : str
        Widget key and URL query parameter (default: the field name).
    applies : tuple of (str, value)
        Conditions on other fields of the same set under which this parameter has an effect
        (``(("method", "tvl1"),)``: a TV-L1 parameter). Where one does not hold, the value
        is left out of the hash (changing it changes no output) and the sidebar hides it.
    """

    help: str
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    output: bool = True
    flag: str = ""
    label: str = ""
    slider: tuple[float, float, float] | None = None
    options: tuple[Any, ...] = ()
    key: str = ""
    applies: tuple[tuple[str, Any], ...] = ()


def param(default: Any, help: str, **meta: Any) -> Any:  # noqa: A002 - "help" is the word every reader expects
    """A dataclass field declared with its ``Param`` metadata."""
    return field(default=default, metadata={"param": Param(help=help, **meta)})


def declared(cls: type) -> list[tuple[dataclasses.Field[Any], Param]]:
    """The fields of a parameter class with their declarations, in order."""
    return [(f, f.metadata["param"]) for f in dataclasses.fields(cls) if "param" in f.metadata]


def option(field: dataclasses.Field[Any], declaration: Param) -> str:
    """A declared parameter's command-line option, ``--`` included: its ``flag``, else the field
    name with dashes (what ``sammflow.cli`` parses and ``sammflow.report`` writes back)."""
    return "--" + (declaration.flag or field.name.replace("_", "-"))


def _document(cls: type) -> type:
    """Append a numpydoc "Attributes" section generated from the declarations."""
    lines = ["", "    Attributes", "    ----------"]
    for f, p in declared(cls):
        when = " and ".join(f"{k} = {v!r}" for k, v in p.applies)
        lines.append(f"    {f.name} : {type(f.default).__name__}, default {f.default!r}")
        lines.append(f"        {p.help[:1].upper()}{p.help[1:]}.{'' if p.output else ' Not part of the output hash.'}"
                     f"{f' Used when {when}.' if when else ''}")
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n" + "\n".join(lines) + "\n"
    return cls


class _ParamSet:
    """Mixin: validation from the declarations, ``to_dict`` and a stable content hash."""

    def __post_init__(self) -> None:
        for f, p in declared(type(self)):
            value = getattr(self, f.name)
            if p.choices and value not in p.choices:
                raise ValueError(f"{f.name} must be one of {list(p.choices)}, got {value!r}")
            if p.minimum is not None and p.maximum is not None and not p.minimum <= value <= p.maximum:
                raise ValueError(f"{f.name} must be in [{p.minimum:g}, {p.maximum:g}], got {value}")
            if p.minimum is not None and value < p.minimum:
                raise ValueError(f"{f.name} must be >= {p.minimum:g}, got {value}")
            if p.maximum is not None and value > p.maximum:
                raise ValueError(f"{f.name} must be <= {p.maximum:g}, got {value}")

    def to_dict(self) -> dict[str, Any]:
        """Every parameter, by name."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def active(self, name: str) -> bool:
        """Whether parameter ``name`` has an effect with the other values of this set (its ``applies``)."""
        p = next(p for f, p in declared(type(self)) if f.name == name)
        return all(getattr(self, key) == value for key, value in p.applies)

    def output_dict(self) -> dict[str, Any]:
        """The parameters that change output bytes (what ``hash`` covers): those declared
        ``output`` and active with the other values (a TV-L1 parameter is not, under Farnebäck)."""
        return {f.name: getattr(self, f.name) for f, p in declared(type(self)) if p.output and self.active(f.name)}

    def judging_dict(self) -> dict[str, Any]:
        """The parameters that do not change output bytes (device, quality thresholds)."""
        return {f.name: getattr(self, f.name) for f, p in declared(type(self)) if not p.output}

    @property
    def hash(self) -> str:
        return stable_hash({type(self).__name__: self.output_dict()})


def stable_hash(obj: Any) -> str:
    """12 hex digits of the SHA-256 of ``obj`` as canonical JSON."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


_INTERPOLATION_NAMES = tuple(INTERPOLATIONS)


@_document
@dataclass(frozen=True)
class DetectParams(_ParamSet):
    """MTCNN face detection on the apex frame (on a downscaled copy, the box mapped back)."""

    device: str = param("cpu", "where MTCNN runs: cpu (OpenCV, no torch), or on torch cuda, cuda:0, mps", output=False)
    max_side: int = param(640, "downscale frames to this longer side for detection (0 = full resolution); SAMM faces stay > 100 px at 640",
                          flag="detect-max-side", label="Detection size (longer side, px)", options=(320, 480, 640, 960, 0))
    min_prob: float = param(0.90, "minimum MTCNN face probability", minimum=0.0, maximum=1.0,
                            label="Minimum face probability", slider=(0.5, 0.99, 0.01))
    neighbours: int = param(3, "if no face on the apex frame, try this many frames either side (closest first)", minimum=0)
    min_face: int = param(40, "smallest face MTCNN looks for, px after the detection downscale (SAMM's are ≈ 80 px there; "
                              "MTCNN's own 20 adds its slowest pyramid levels)", minimum=12,
                          label="Minimum face size (px at detection size)", slider=(12, 200, 4))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.max_side == 0 or self.max_side >= 64):
            raise ValueError(f"max_side must be 0 or >= 64, got {self.max_side}")
        kind, colon, index = self.device.partition(":")  # checked here, before torch is imported or anything written
        if not (self.device in ("cpu", "cuda", "mps") or (kind == "cuda" and colon and index.isdigit() and index.isascii())):
            raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got {self.device!r}")


#: Alignment methods: the original scripts' whole-pixel template match, or that match refined
#: to sub-pixel precision by robust Gauss-Newton (see ``sammflow.align``).
ALIGN_METHODS = ("subpixel", "whole_pixel")
#: Geometric models of the sub-pixel refinement: shift only, or shift + rotation + scale.
ALIGN_MOTIONS = ("translation", "similarity")


@_document
@dataclass(frozen=True)
class AlignParams(_ParamSet):
    """Alignment of every frame to the apex crop (template match, then crop and resize)."""

    margin: int = param(40, "template-matching search margin around the apex box, frame px (original: 40)", minimum=0,
                        label="Search margin (frame px)", slider=(0, 120, 5))
    crop_size: int = param(224, "side of the aligned crop, px (original: 224)", minimum=16, maximum=2048,
                           label="Crop size (px)", options=(112, 160, 224, 256, 320))
    interpolation: str = param("area", "resize filter from the face box to the crop: area (antialiased), linear (the original), cubic, nearest",
                               choices=_INTERPOLATION_NAMES, flag="crop-interpolation")
    method: str = param("subpixel", "alignment: subpixel (robust sub-pixel refinement, ≈ 0.02 px) or whole_pixel (the original scripts)",
                        choices=ALIGN_METHODS, label="Method")
    motion: str = param("translation", "sub-pixel model: translation, or similarity (adds small rotation/scale for head roll)",
                        choices=ALIGN_MOTIONS, label="Motion model")
    robust: bool = param(True, "down-weight face regions that move on their own (brows, mouth) when aligning (sub-pixel method)",
                         label="Ignore regions that move on their own")
    min_score: float = param(0.8, "flag frames whose match score (correlation with the apex crop) is below this",
                             minimum=-1.0, maximum=1.0, output=False, label="Flag frames with match score below", slider=(0.0, 1.0, 0.01))
    max_residual: float = param(0.2, "flag frames whose residual shift estimate exceeds this, crop px", output=False,
                                label="Flag frames with residual above (crop px)", slider=(0.05, 2.0, 0.05))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.max_residual > 0:
            raise ValueError(f"max_residual must be > 0, got {self.max_residual}")


#: Dense optical flow methods (``sammflow.flow``): OpenCV's Farnebäck (the original scripts),
#: Dual TV-L1 (the STSTNet / HTNet / OFF-ApexNet preprocessing; opencv-contrib) and DIS (fast).
FLOW_METHODS = ("farneback", "tvl1", "dis")
_FARNEBACK = (("method", "farneback"),)
_TVL1 = (("method", "tvl1"),)
_DIS = (("method", "dis"),)


@_document
@dataclass(frozen=True)
class FlowParams(_ParamSet):
    """Dense optical flow from the aligned onset crop to the apex crop.

    ``method`` picks the algorithm; each method's own parameters only count when it is the
    one picked. Farnebäck defaults are the original script's; TV-L1 and DIS defaults are
    OpenCV's (``DualTVL1OpticalFlow_create()``, ``DISOpticalFlow_create(PRESET_MEDIUM)``).
    """

    method: str = param("farneback", "optical flow method: farneback (the original scripts), tvl1 (Dual TV-L1, what STSTNet, HTNet "
                                     "and OFF-ApexNet use), dis (DIS, fast)", choices=FLOW_METHODS, flag="flow-method",
                        label="Flow method", key="flow_method")
    pyr_scale: float = param(0.5, "Farnebäck: image scale between pyramid levels, in (0, 1)", label="Pyramid scale",
                             slider=(0.1, 0.9, 0.05), applies=_FARNEBACK)
    levels: int = param(3, "Farnebäck: pyramid levels (OpenCV stops adding levels below 32 px)", minimum=1, maximum=50,
                        label="Pyramid levels", slider=(1, 6, 1), applies=_FARNEBACK)
    winsize: int = param(15, "Farnebäck: averaging window size, px, odd (OpenCV averages over winsize + 1 px when it is even)",
                         minimum=3, maximum=2047, label="Window size", slider=(3, 61, 2), applies=_FARNEBACK)
    iterations: int = param(3, "Farnebäck: iterations at each pyramid level", minimum=1, maximum=100, label="Iterations",
                            slider=(1, 10, 1), applies=_FARNEBACK)
    poly_n: int = param(5, "Farnebäck: pixel neighbourhood of the polynomial expansion", choices=(5, 7), label="Polynomial neighbourhood",
                        applies=_FARNEBACK)
    poly_sigma: float = param(1.2, "Farnebäck: Gaussian sigma of the polynomial expansion (below 0.25 the expansion degenerates: "
                                   "zero flow)", minimum=0.25, maximum=10.0, label="Polynomial sigma", slider=(0.5, 2.0, 0.05),
                              applies=_FARNEBACK)
    flags: int = param(0, "Farnebäck: OpenCV flags, 0 or 256 (OPTFLOW_FARNEBACK_GAUSSIAN)", choices=(0, cv2.OPTFLOW_FARNEBACK_GAUSSIAN),
                       flag="flow-flags", applies=_FARNEBACK)
    tvl1_tau: float = param(0.25, "TV-L1: time step of the numerical scheme", minimum=0.01, maximum=0.25, label="Time step (tau)",
                            slider=(0.05, 0.25, 0.01), applies=_TVL1)
    tvl1_lambda: float = param(0.15, "TV-L1: weight of the data term (smaller: smoother flow)", minimum=0.001, maximum=10.0,
                               label="Data weight (lambda)", slider=(0.01, 1.0, 0.01), applies=_TVL1)
    tvl1_theta: float = param(0.3, "TV-L1: tightness of the coupling between the two sub-problems", minimum=0.01, maximum=1.0,
                              label="Tightness (theta)", slider=(0.05, 1.0, 0.05), applies=_TVL1)
    tvl1_scales: int = param(5, "TV-L1: pyramid levels", minimum=1, maximum=10, label="Scales", slider=(1, 8, 1), applies=_TVL1)
    tvl1_warps: int = param(5, "TV-L1: warpings per level", minimum=1, maximum=20, label="Warps", slider=(1, 10, 1), applies=_TVL1)
    tvl1_epsilon: float = param(0.01, "TV-L1: stopping threshold of the inner iterations", minimum=1e-5, maximum=1.0, applies=_TVL1)
    tvl1_inner_iterations: int = param(30, "TV-L1: inner iterations at each warp", minimum=1, maximum=500, applies=_TVL1)
    tvl1_outer_iterations: int = param(10, "TV-L1: outer iterations at each level", minimum=1, maximum=100, applies=_TVL1)
    tvl1_scale_step: float = param(0.8, "TV-L1: image scale between pyramid levels, in (0, 1)", minimum=0.1, maximum=0.95,
                                   applies=_TVL1)
    tvl1_gamma: float = param(0.0, "TV-L1: weight of the illumination-change term (0: none)", minimum=0.0, maximum=10.0, applies=_TVL1)
    tvl1_median_filtering: int = param(5, "TV-L1: median filter applied to the flow between warps, px (1: none)", choices=(1, 3, 5),
                                       applies=_TVL1)
    dis_finest_scale: int = param(1, "DIS: finest pyramid level computed (0: full resolution; OpenCV's medium preset: 1)", minimum=0,
                                  maximum=6, label="Finest scale", slider=(0, 3, 1), applies=_DIS)
    dis_patch_size: int = param(8, "DIS: patch side, px", minimum=3, maximum=64, label="Patch size", slider=(4, 16, 1), applies=_DIS)
    dis_patch_stride: int = param(3, "DIS: distance between patches, px (at most the patch size)", minimum=1, maximum=64,
                                  label="Patch stride", slider=(1, 8, 1), applies=_DIS)
    dis_iterations: int = param(25, "DIS: gradient-descent iterations per patch", minimum=1, maximum=500, applies=_DIS)
    dis_refine_iterations: int = param(5, "DIS: variational refinement iterations (0: none)", minimum=0, maximum=100, applies=_DIS)
    dis_refine_alpha: float = param(20.0, "DIS: smoothness weight of the variational refinement", minimum=0.0, maximum=1000.0,
                                    applies=_DIS)
    dis_refine_delta: float = param(5.0, "DIS: colour-constancy weight of the variational refinement", minimum=0.0, maximum=1000.0,
                                    applies=_DIS)
    dis_refine_gamma: float = param(10.0, "DIS: gradient-constancy weight of the variational refinement", minimum=0.0, maximum=1000.0,
                                    applies=_DIS)
    dis_mean_normalization: bool = param(True, "DIS: normalise patch means (robust to illumination change)", applies=_DIS)
    dis_spatial_propagation: bool = param(True, "DIS: propagate good patch estimates to neighbours", applies=_DIS)
    head_motion: bool = param(False, "subtract the median flow of the nose region (residual head motion, as SoftNet / MTSN do)",
                              label="Subtract residual head motion (nose median)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.pyr_scale < 1.0:
            raise ValueError(f"pyr_scale must be in (0, 1), got {self.pyr_scale}")
        if self.winsize % 2 == 0:  # OpenCV's window is 2 * (winsize // 2) + 1 px: an even one is the next odd one
            raise ValueError(f"winsize must be odd (OpenCV averages over winsize + 1 px when it is even: "
                             f"{self.winsize} would give the flow of {self.winsize + 1}), got {self.winsize}")
        if self.dis_patch_stride > self.dis_patch_size:
            raise ValueError(f"dis_patch_stride must be <= dis_patch_size ({self.dis_patch_size}), got {self.dis_patch_stride}")


def dis_coarsest_scale(shape: tuple[int, int], patch_size: int) -> int:
    """The coarsest pyramid level OpenCV's DIS builds for a crop of ``shape`` (H, W) and
    ``patch_size`` (OpenCV 4.14's own rule: motion up to a quarter of the width, patches no
    larger than the level). A finer ``dis_finest_scale`` than this would be silently replaced
    by OpenCV (and its patch size too): not the parameters recorded."""
    h, w = shape
    return min(int(math.log(max(h, w) / (4.0 * patch_size)) / math.log(2.0) + 0.5), int(math.log(min(h, w) / patch_size) / math.log(2.0)))


#: What a flow map PNG holds (``EncodeParams.channels``).
MAP_CHANNELS = ("hsv", "uvs", "uv")
#: Brightness scales of an HSV map (``EncodeParams.scale``).
MAP_SCALES = ("robust", "minmax", "fixed")


@_document
@dataclass(frozen=True)
class EncodeParams(_ParamSet):
    """The flow map: what its channels hold, its brightness scale, and the resize to the model's input size."""

    size: int = param(28, "side of the square flow map and of the arrays of --arrays, px (original: 28)", minimum=4, maximum=1024,
                      flag="map-size", label="Map size (px)", options=(14, 28, 32, 48, 64, 112), key="map_size")
    interpolation: str = param("area", "flow-map resize filter (original: area)", choices=_INTERPOLATION_NAMES, flag="map-interpolation",
                               label="Map resize filter", key="map_interp")
    channels: str = param("hsv", "what the map PNG holds: hsv (direction as hue, magnitude as brightness: the original scripts), "
                                 "uvs (R = u, G = v, B = optical strain, each min-max normalised: the STSTNet / HTNet input), "
                                 "uv (R = u, G = v, B = 0: OFF-ApexNet)", choices=MAP_CHANNELS, flag="map-channels",
                          label="Map channels", key="map_channels")
    scale: str = param("robust", "brightness scale of an hsv map: robust (magnitude / 99th percentile of the magnitude away from the "
                                 "flow's border, clipped: border artefacts cannot darken the map), minmax (the original scripts), or "
                                 "fixed (one scale for every clip, --map-fixed-scale px: maps compare across clips)",
                       choices=MAP_SCALES, flag="map-scale", label="Map brightness scale", key="map_scale",
                       applies=(("channels", "hsv"),))
    fixed_scale: float = param(2.0, "magnitude shown at full brightness with --map-scale fixed, crop px (larger is clipped)",
                               minimum=1e-3, maximum=1000.0, flag="map-fixed-scale", label="Full brightness at (crop px)",
                               slider=(0.1, 10.0, 0.1), key="map_fixed_scale", applies=(("channels", "hsv"), ("scale", "fixed")))


@_document
@dataclass(frozen=True)
class GifParams(_ParamSet):
    """Onset→apex animation."""

    fps: float = param(10.0, "GIF frames per second", minimum=0.5, maximum=100)
    step: int = param(1, "use every STEP-th frame (SAMM is 200 fps: 2–4 keeps GIFs small)", minimum=1)
    to_offset: bool = param(False, "animate on to the offset frame, not only to apex")
    size: int = param(224, "side of the GIF, px: encoded at display size", minimum=16, maximum=1024, flag="gif-size")
    labels: bool = param(True, "draw the frame number and an onset / apex / offset marker in the top corners of each frame",
                         flag="gif-labels")


#: Which apex each clip uses (``AnnotationParams.apex``).
APEX_CHOICES = ("annotated", "auto", "spot", "middle")


@_document
@dataclass(frozen=True)
class AnnotationParams(_ParamSet):
    """Which annotation values a run uses: the shipped fixes, and the apex (``sammflow.labels``, ``sammflow.spot``)."""

    fix: bool = param(False, "apply the versioned table of published annotation fixes shipped with sammflow "
                             "(sammflow.fixes: each entry with its source); the manifest's apex_source says where a fix was used",
                      flag="fix-annotations", label="Apply published annotation fixes", key="fix_annotations")
    apex: str = param("annotated", "apex frame of each clip: annotated (the file's; a row with a missing or impossible apex is "
                                   "rejected, and a dataset that annotates none, SMIC, has every apex spotted), auto (spot the apex "
                                   "of those rows only), spot (spot every clip's apex: the frame of peak facial motion between onset "
                                   "and offset), middle (those rows take the middle frame, as MEB does for SMIC)",
                      choices=APEX_CHOICES, label="Apex frame", key="apex_policy")
    megc2019: bool = param(False, "keep only the clips of the MEGC2019 composite's three classes (negative, positive, surprise: "
                                  "sammflow.labels); SAMM, CASME II and SMIC have them, other datasets none",
                           flag="megc2019", label="Only MEGC2019 classes", key="megc2019")

    def output_dict(self) -> dict[str, Any]:
        """As every set's, plus the version of the fixes table when fixes are applied: a new
        table (other fixes) makes other outputs."""
        values = super().output_dict()
        if self.fix:
            from sammflow.fixes import FIXES_VERSION

            values["fixes_version"] = FIXES_VERSION
        return values


#: The stages of a ``PipelineParams``, by field name, with their titles.
STAGES = {"annotations": "annotations", "detect": "face detection", "align": "alignment", "flow": "optical flow",
          "encode": "flow map encoding"}
#: The parameter class of each stage.
STAGE_CLASSES: dict[str, type] = {"annotations": AnnotationParams, "detect": DetectParams, "align": AlignParams, "flow": FlowParams,
                                  "encode": EncodeParams}


@dataclass(frozen=True)
class Preset:
    """A named set of parameter values: what a model's published preprocessing is known to use.

    Attributes
    ----------
    name : str
    title : str
        One line for menus and ``--help``.
    values : dict of stage → {parameter: value}
        What the preset sets; every other parameter keeps its default.
    basis : str
        What the values are based on, and what is unknown about the original recipe.
    """

    name: str
    title: str
    values: dict[str, dict[str, Any]]
    basis: str


#: ``--preset``: the seed (today's default: the original SAMM scripts' Farnebäck + HSV picture,
#: with sub-pixel alignment and the robust brightness scale), and the inputs of the reference
#: models, TV-L1 between onset and apex.
PRESETS = {
    "seed": Preset("seed", "Farnebäck flow, HSV map 28×28 (the original SAMM scripts; sammflow's defaults)", {},
                   "the original SAMM preprocessing scripts: MTCNN box on the apex, template-matched 224×224 crops, "
                   "Farnebäck (0.5, 3, 15, 3, 5, 1.2, 0), HSV map, INTER_AREA to 28×28"),
    "ststnet": Preset("ststnet", "TV-L1 flow, u·v·strain arrays and map 28×28 (STSTNet / HTNet input)",
                      {"flow": {"method": "tvl1"}, "encode": {"channels": "uvs", "size": 28, "interpolation": "area"}},
                      "STSTNet (Liong et al. 2019): TV-L1 optical flow between onset and apex, horizontal u, vertical v and "
                      "optical strain, resized to 28×28, each channel min-max normalised. Not published: the TV-L1 parameters "
                      "(OpenCV's defaults here), the face crop (sammflow's aligned 224 px crop here), the strain's differencing "
                      "scheme, and whether strain is computed before or after the resize (before, at crop resolution, here)"),
    "offapexnet": Preset("offapexnet", "TV-L1 flow, u·v arrays and map 28×28 (OFF-ApexNet input)",
                         {"flow": {"method": "tvl1"}, "encode": {"channels": "uv", "size": 28, "interpolation": "area"}},
                         "OFF-ApexNet (Gan et al. 2019): TV-L1 optical flow between onset and apex, horizontal and vertical "
                         "components, 28×28, each normalised. Not published: the TV-L1 parameters (OpenCV's defaults here), the "
                         "face crop and the normalisation's exact form (per-map min-max here)"),
}


@dataclass(frozen=True)
class PipelineParams:
    """Everything that determines an exported flow map.

    ``preset`` names the ``PRESETS`` entry the values started from (``"seed"``, the defaults,
    unless said otherwise; ``""``: none); it is a record for ``params.json``, with
    ``preset_changes``, not part of the hash: the values are.
    """

    annotations: AnnotationParams = field(default_factory=AnnotationParams)
    detect: DetectParams = field(default_factory=DetectParams)
    align: AlignParams = field(default_factory=AlignParams)
    flow: FlowParams = field(default_factory=FlowParams)
    encode: EncodeParams = field(default_factory=EncodeParams)
    preset: str = "seed"

    def __post_init__(self) -> None:
        if self.preset and self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {list(PRESETS)}, got {self.preset!r}")
        if self.flow.method == "dis":
            side, patch = self.align.crop_size, self.flow.dis_patch_size
            coarsest = dis_coarsest_scale((side, side), patch)
            if self.flow.dis_finest_scale > coarsest:
                raise ValueError(f"dis_finest_scale {self.flow.dis_finest_scale} is coarser than the coarsest level DIS builds for a "
                                 f"{side} px crop (crop_size) with {patch} px patches (dis_patch_size): at most {coarsest}")

    def to_dict(self) -> dict[str, Any]:
        """Every parameter, by stage."""
        return {stage: getattr(self, stage).to_dict() for stage in STAGES}

    def output_dict(self) -> dict[str, Any]:
        """The parameters that change output bytes, by stage (``params.json``'s ``params``)."""
        return {stage: getattr(self, stage).output_dict() for stage in STAGES}

    def judging_dict(self) -> dict[str, Any]:
        """The parameters outside the hash, by stage (``params.json``'s ``settings``)."""
        return {stage: values for stage in STAGES if (values := getattr(self, stage).judging_dict())}

    @property
    def hash(self) -> str:
        return stable_hash({"PipelineParams": self.output_dict()})

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, preset: str = "seed") -> PipelineParams:
        """Inverse of ``to_dict`` (or of ``output_dict`` + ``judging_dict`` merged), as read back from a ``params.json``."""
        def known(kind: type, values: dict[str, Any]) -> dict[str, Any]:  # not what output_dict adds (fixes_version)
            names = {f.name for f in dataclasses.fields(kind)}
            return {k: v for k, v in values.items() if k in names}

        return cls(**{stage: kind(**known(kind, data.get(stage, {}))) for stage, kind in STAGE_CLASSES.items()}, preset=preset)

    @classmethod
    def from_preset(cls, name: str, overrides: dict[str, dict[str, Any]] | None = None) -> PipelineParams:
        """The preset's values, then ``overrides`` (by stage) on top: what ``--preset`` and explicit flags give.

        Raises
        ------
        ValueError
            Unknown preset, or a value out of range.
        """
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {list(PRESETS)}, got {name!r}")
        values = {stage: {**PRESETS[name].values.get(stage, {}), **(overrides or {}).get(stage, {})} for stage in STAGES}
        return cls.from_dict(values, preset=name)

    def preset_changes(self) -> list[str]:
        """``stage.name`` of each output parameter set to another value than the preset's (empty
        without a preset): what was changed after choosing it (the device and thresholds do not count)."""
        if not self.preset:
            return []
        base, mine, judging = PipelineParams.from_preset(self.preset).to_dict(), self.to_dict(), self.judging_dict()
        return [f"{stage}.{name}" for stage in STAGES for name in mine[stage]
                if name not in judging.get(stage, {}) and base[stage][name] != mine[stage][name]]
