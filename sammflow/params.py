"""Parameter sets of every pipeline stage, as frozen dataclasses with a stable hash.

The hash of a parameter set is written next to every output (``params.json``) and is the
cache key of every derived artefact, so a file can always be traced to the exact settings
that made it. Defaults reproduce the original SAMM scripts.
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


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_interpolation(name: str) -> None:
    _require(name in INTERPOLATIONS, f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {name!r}")


class _Hashable:
    """Mixin: ``to_dict`` and a stable content hash (independent of dict order and process)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @property
    def hash(self) -> str:
        return stable_hash({type(self).__name__: self.to_dict()})


def stable_hash(obj: Any) -> str:
    """12 hex digits of the SHA-256 of ``obj`` as canonical JSON."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class DetectParams(_Hashable):
    """MTCNN face detection on the apex frame.

    Attributes
    ----------
    device : str
        ``"cpu"`` or a torch device such as ``"cuda"`` / ``"cuda:0"``.
    max_side : int
        The frame is downscaled so that its longer side is at most this many pixels before
        detection, and the box is scaled back to frame pixels (MTCNN on a 2040×1088 frame is
        slow, and SAMM faces stay > 100 px at 640). ``0`` detects at full resolution.
    min_prob : float
        Boxes below this MTCNN probability are ignored.
    neighbours : int
        When no face is found on the apex frame, try up to this many frames on either side
        (closest first) before giving up.
    min_face : int
        Smallest face MTCNN looks for, in pixels of the image it is given (after the
        ``max_side`` downscale). SAMM faces are ≈ 80 px there; MTCNN's own default of 20
        adds the largest (slowest) pyramid levels for faces no SAMM-like clip has.
    """

    device: str = "cpu"
    max_side: int = 640
    min_prob: float = 0.90
    neighbours: int = 3
    min_face: int = 40

    def __post_init__(self) -> None:
        _require(self.max_side == 0 or self.max_side >= 64, f"max_side must be 0 or >= 64, got {self.max_side}")
        _require(0.0 <= self.min_prob <= 1.0, f"min_prob must be in [0, 1], got {self.min_prob}")
        _require(self.neighbours >= 0, f"neighbours must be >= 0, got {self.neighbours}")
        _require(self.min_face >= 12, f"min_face must be >= 12 (MTCNN's smallest window), got {self.min_face}")


#: Alignment methods: the original scripts' whole-pixel template match, or that match refined
#: to sub-pixel precision by robust Gauss-Newton (see ``sammflow.align``).
ALIGN_METHODS = ("subpixel", "whole_pixel")
#: Geometric models of the sub-pixel refinement: shift only, or shift + rotation + scale.
ALIGN_MOTIONS = ("translation", "similarity")


@dataclass(frozen=True)
class AlignParams(_Hashable):
    """Alignment of every frame to the apex crop.

    Attributes
    ----------
    margin : int
        Search margin in frame pixels around the apex box (original: 40).
    crop_size : int
        Side of the square aligned crop in pixels (original: 224).
    interpolation : str
        Resize filter from the face box to ``crop_size`` (one of ``INTERPOLATIONS``).
        ``"area"`` antialiases the ≈ 1.5× downscale of a SAMM face box.
    method : str
        ``"subpixel"`` (default): whole-pixel match refined to ≈ 0.02 px, robust to the local
        facial motion; ``"whole_pixel"``: the original scripts' method.
    motion : str
        ``"translation"`` or ``"similarity"`` (adds small rotation and scale, for head roll).
        Only used by ``"subpixel"``.
    robust : bool
        Down-weight face regions that move on their own (brows, mouth) so that they cannot
        drag the alignment. Only used by ``"subpixel"``.
    min_score : float
        Frames whose match score (normalised correlation with the apex crop) is below this
        are flagged, and so is their clip.
    max_residual : float
        Frames whose residual shift estimate exceeds this many crop pixels are flagged.
    """

    margin: int = 40
    crop_size: int = 224
    interpolation: str = "area"
    method: str = "subpixel"
    motion: str = "translation"
    robust: bool = True
    min_score: float = 0.8
    max_residual: float = 0.2

    def __post_init__(self) -> None:
        _require(self.margin >= 0, f"margin must be >= 0, got {self.margin}")
        _require(16 <= self.crop_size <= 2048, f"crop_size must be in [16, 2048], got {self.crop_size}")
        _check_interpolation(self.interpolation)
        _require(self.method in ALIGN_METHODS, f"method must be one of {ALIGN_METHODS}, got {self.method!r}")
        _require(self.motion in ALIGN_MOTIONS, f"motion must be one of {ALIGN_MOTIONS}, got {self.motion!r}")
        _require(-1.0 <= self.min_score <= 1.0, f"min_score must be in [-1, 1], got {self.min_score}")
        _require(self.max_residual > 0, f"max_residual must be > 0, got {self.max_residual}")


@dataclass(frozen=True)
class FlowParams(_Hashable):
    """Farnebäck dense optical flow (``cv2.calcOpticalFlowFarneback``); defaults are the
    original script's.

    ``head_motion`` subtracts the median flow of a stable region around the nose (as
    SoftNet / MTSN do), removing residual global head motion; off by default.
    """

    pyr_scale: float = 0.5
    levels: int = 3
    winsize: int = 15
    iterations: int = 3
    poly_n: int = 5
    poly_sigma: float = 1.2
    flags: int = 0
    head_motion: bool = False

    def __post_init__(self) -> None:
        _require(0.0 < self.pyr_scale < 1.0, f"pyr_scale must be in (0, 1), got {self.pyr_scale}")
        _require(self.levels >= 1, f"levels must be >= 1, got {self.levels}")
        _require(self.winsize >= 3, f"winsize must be >= 3, got {self.winsize}")
        _require(self.iterations >= 1, f"iterations must be >= 1, got {self.iterations}")
        _require(self.poly_n in (5, 7), f"poly_n must be 5 or 7, got {self.poly_n}")
        _require(self.poly_sigma > 0, f"poly_sigma must be > 0, got {self.poly_sigma}")


@dataclass(frozen=True)
class EncodeParams(_Hashable):
    """HSV encoding of a flow field and the resize to the model's input size.

    Attributes
    ----------
    size : int
        Side of the square flow map (original: 28).
    interpolation : str
        Resize filter (original: ``"area"``).
    """

    size: int = 28
    interpolation: str = "area"

    def __post_init__(self) -> None:
        _require(4 <= self.size <= 1024, f"size must be in [4, 1024], got {self.size}")
        _check_interpolation(self.interpolation)


@dataclass(frozen=True)
class GifParams(_Hashable):
    """Onset→apex animation.

    Attributes
    ----------
    fps : float
        Playback speed in frames per second.
    step : int
        Use every ``step``-th frame (SAMM is 200 fps: a step of 2–4 keeps GIFs small).
    to_offset : bool
        Continue from apex to the offset frame.
    size : int
        Side of the GIF in pixels: encode at display size, never let a viewer rescale it.
    """

    fps: float = 10.0
    step: int = 1
    to_offset: bool = False
    size: int = 224

    def __post_init__(self) -> None:
        _require(0.5 <= self.fps <= 100, f"fps must be in [0.5, 100], got {self.fps}")
        _require(self.step >= 1, f"step must be >= 1, got {self.step}")
        _require(16 <= self.size <= 1024, f"size must be in [16, 1024], got {self.size}")


@dataclass(frozen=True)
class PipelineParams(_Hashable):
    """Everything that determines an exported flow map."""

    detect: DetectParams = field(default_factory=DetectParams)
    align: AlignParams = field(default_factory=AlignParams)
    flow: FlowParams = field(default_factory=FlowParams)
    encode: EncodeParams = field(default_factory=EncodeParams)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineParams:
        """Inverse of ``to_dict`` (as read back from a ``params.json``)."""
        return cls(
            detect=DetectParams(**data.get("detect", {})),
            align=AlignParams(**data.get("align", {})),
            flow=FlowParams(**data.get("flow", {})),
            encode=EncodeParams(**data.get("encode", {})),
        )
