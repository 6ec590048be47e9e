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


def param(default: Any, help: str, **meta: Any) -> Any:  # noqa: A002 - "help" is the word every reader expects
    """A dataclass field declared with its ``Param`` metadata."""
    return field(default=default, metadata={"param": Param(help=help, **meta)})


def declared(cls: type) -> list[tuple[dataclasses.Field[Any], Param]]:
    """The fields of a parameter class with their declarations, in order."""
    return [(f, f.metadata["param"]) for f in dataclasses.fields(cls) if "param" in f.metadata]


def _document(cls: type) -> type:
    """Append a numpydoc "Attributes" section generated from the declarations."""
    lines = ["", "    Attributes", "    ----------"]
    for f, p in declared(cls):
        lines.append(f"    {f.name} : {type(f.default).__name__}, default {f.default!r}")
        lines.append(f"        {p.help[:1].upper()}{p.help[1:]}.{'' if p.output else ' Not part of the output hash.'}")
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

    def output_dict(self) -> dict[str, Any]:
        """The parameters that change output bytes (what ``hash`` covers)."""
        return {f.name: getattr(self, f.name) for f, p in declared(type(self)) if p.output}

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

    device: str = param("cpu", "torch device for MTCNN: cpu, cuda, cuda:0", output=False)
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


@_document
@dataclass(frozen=True)
class FlowParams(_ParamSet):
    """Farnebäck dense optical flow (``cv2.calcOpticalFlowFarneback``); defaults are the original script's."""

    pyr_scale: float = param(0.5, "image scale between pyramid levels, in (0, 1)", label="Pyramid scale", slider=(0.1, 0.9, 0.05))
    levels: int = param(3, "pyramid levels (OpenCV stops adding levels below 32 px)", minimum=1, maximum=50, label="Pyramid levels",
                        slider=(1, 6, 1))
    winsize: int = param(15, "averaging window size, px, odd (OpenCV averages over winsize + 1 px when it is even)", minimum=3,
                         maximum=2047, label="Window size", slider=(3, 61, 2))
    iterations: int = param(3, "iterations at each pyramid level", minimum=1, maximum=100, label="Iterations", slider=(1, 10, 1))
    poly_n: int = param(5, "pixel neighbourhood of the polynomial expansion", choices=(5, 7), label="Polynomial neighbourhood")
    poly_sigma: float = param(1.2, "Gaussian sigma of the polynomial expansion (below 0.25 the expansion degenerates: zero flow)",
                              minimum=0.25, maximum=10.0, label="Polynomial sigma", slider=(0.5, 2.0, 0.05))
    flags: int = param(0, "OpenCV flags: 0, or 256 (OPTFLOW_FARNEBACK_GAUSSIAN)", choices=(0, cv2.OPTFLOW_FARNEBACK_GAUSSIAN),
                       flag="flow-flags")
    head_motion: bool = param(False, "subtract the median flow of the nose region (residual head motion, as SoftNet / MTSN do)",
                              label="Subtract residual head motion (nose median)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.pyr_scale < 1.0:
            raise ValueError(f"pyr_scale must be in (0, 1), got {self.pyr_scale}")
        if self.winsize % 2 == 0:  # OpenCV's window is 2 * (winsize // 2) + 1 px: an even one is the next odd one
            raise ValueError(f"winsize must be odd (OpenCV averages over winsize + 1 px when it is even: "
                             f"{self.winsize} would give the flow of {self.winsize + 1}), got {self.winsize}")


@_document
@dataclass(frozen=True)
class EncodeParams(_ParamSet):
    """HSV encoding of a flow field and the resize to the model's input size."""

    size: int = param(28, "side of the square flow map, px (original: 28)", minimum=4, maximum=1024, flag="map-size",
                      label="Map size (px)", options=(14, 28, 32, 48, 64, 112), key="map_size")
    interpolation: str = param("area", "flow-map resize filter (original: area)", choices=_INTERPOLATION_NAMES, flag="map-interpolation",
                               label="Map resize filter", key="map_interp")
    scale: str = param("robust", "brightness scale of each map: robust (magnitude / 99th percentile of the magnitude away from the "
                                 "flow's border, clipped: border artefacts cannot darken the map) or minmax (the original scripts)",
                       choices=("robust", "minmax"), flag="map-scale", label="Map brightness scale", key="map_scale")


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


#: The stages of a ``PipelineParams``, by field name, with their titles.
STAGES = {"detect": "face detection", "align": "alignment", "flow": "optical flow (Farnebäck)", "encode": "flow map encoding"}


@dataclass(frozen=True)
class PipelineParams:
    """Everything that determines an exported flow map."""

    detect: DetectParams = field(default_factory=DetectParams)
    align: AlignParams = field(default_factory=AlignParams)
    flow: FlowParams = field(default_factory=FlowParams)
    encode: EncodeParams = field(default_factory=EncodeParams)

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
    def from_dict(cls, data: dict[str, Any]) -> PipelineParams:
        """Inverse of ``to_dict`` (or of ``output_dict`` + ``judging_dict`` merged), as read back from a ``params.json``."""
        return cls(**{stage: kind(**data.get(stage, {})) for stage, kind in
                      (("detect", DetectParams), ("align", AlignParams), ("flow", FlowParams), ("encode", EncodeParams))})
