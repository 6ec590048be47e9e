"""Demo datasets in the layout of each micro-expression dataset, generated from a real face photograph.

SAMM, CASME II, SMIC, CAS(ME)³ and MMEW are licensed, so everything that must run anywhere
(the app's default dataset, tests, benchmarks) runs on this instead. The face is
scikit-image's ``astronaut`` (shipped inside the wheel: no download). Each subject is that
face at a different scale, place, contrast and mirroring; each clip adds per-frame sub-pixel
head jitter, sensor noise, and a known local motion that rises from onset to apex and falls
to offset. ``ground_truth.json`` records all of it, so alignment and flow can be measured
against the truth.

Each ``kind`` writes its dataset's layout, frame size and annotation format (``DemoConfig.kind``):

========  ==================================================  ==============  =============================================
kind      frames (under OUT)                                  frames          annotations (in OUT)
========  ==================================================  ==============  =============================================
samm      ``006/006_1_2/006_05562.jpg``                       2040×1088 grey  ``samm.csv`` (';', CRLF)
casme2    ``CASME2_RAW_selected/sub01/EP02_01f/img46.jpg``    640×480 BGR     ``CASME2-coding-20140508.xlsx``: Subject a
                                                                              number; one ApexFrame is ``/``
smic      ``HS/s1/micro/negative/s1_ne_01/image000123.jpg``   640×480 BGR     ``smic.xlsx``: index column, subject,
                                                                              material, emotion, onset, offset (no apex)
casme3a   ``part_A/spNO.1/a/color/355.jpg`` (and ``depth/``)  1280×720 BGR    ``cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx``,
                                                                              sheet ``label``, every cell text; two rows
                                                                              share one video folder
mmew      ``Micro_Expression/happiness/S03_01_002/1.jpg``     1280×960 BGR    ``MMEW_Micro_Exp.xlsx`` (frames 1-based per
                                                                              clip)
========  ==================================================  ==============  =============================================

Coordinates in the ground truth are frame pixels, +x right, +y down. The local motion's
bumps stay where the ground truth puts them, whatever the jitter (the head moves under them),
and they are a pull field: frame pixel x shows the head at x − motion(x) − jitter, so the
forward onset→apex flow g at x solves g = motion(x + g) (``bench/fidelity.py``,
``true_flow_in_crop``). Colour frames show the photograph's own colours; their sensor noise is
the same in the three channels, so the grey that sammflow reads has the configured noise.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sammflow.text import show_path
from sammflow.params import stable_hash

FRAME_WIDTH, FRAME_HEIGHT = 2040, 1088  # SAMM frame size
_GENERATOR_VERSION = 3  # bump when the same config would render different frames
GROUND_TRUTH = "ground_truth.json"
ANNOTATIONS = "samm.csv"

# Region of ``skimage.data.astronaut()`` (512×512) used as the head, and where MTCNN finds
# the face and its landmarks in that photograph (facenet-pytorch 2.5.3, full resolution).
_HEAD = (75, 0, 375, 300)  # x1, y1, x2, y2 in photograph pixels
# closer around the face, which fills the smaller frames of the other datasets
_HEAD_CLOSE = (130, 15, 320, 210)
_FACE_BOX = (181.1, 62.2, 267.7, 172.1)
_LANDMARKS = {
    "eye_left": (205.0, 101.7),
    "eye_right": (246.8, 103.7),
    "nose": (224.7, 129.0),
    "mouth_left": (201.7, 139.2),
    "mouth_right": (245.3, 141.9),
}

#: Local motions, as (landmark, offset from it in face heights, direction in degrees,
#: relative amplitude); direction 0° = +x, 90° = +y (down). Emotion and AUs for the CSV.
MOTIONS: dict[str, dict[str, Any]] = {
    "brows_down": {
        "bumps": [("eye_left", (0.0, -0.13), 90.0, 1.0), ("eye_right", (0.0, -0.13), 90.0, 1.0)],
        "emotion": "Anger", "action_units": "4", "objective_class": "3",
    },
    "brows_up": {
        "bumps": [("eye_left", (0.0, -0.15), 270.0, 1.0), ("eye_right", (0.0, -0.15), 270.0, 1.0)],
        "emotion": "Surprise", "action_units": "1+2", "objective_class": "7",
    },
    "smile": {
        "bumps": [("mouth_left", (-0.02, 0.0), 225.0, 1.0), ("mouth_right", (0.02, 0.0), 315.0, 1.0)],
        "emotion": "Happiness", "action_units": "12", "objective_class": "1",
    },
    "brows_down_smile": {
        "bumps": [
            ("eye_left", (0.0, -0.13), 90.0, 1.0), ("eye_right", (0.0, -0.13), 90.0, 1.0),
            ("mouth_left", (-0.02, 0.0), 225.0, 0.8), ("mouth_right", (0.02, 0.0), 315.0, 0.8),
        ],
        "emotion": "Other", "action_units": "4+12", "objective_class": "7",
    },
    "lip_corner_right": {
        "bumps": [("mouth_right", (0.02, 0.0), 300.0, 1.0)],
        "emotion": "Contempt", "action_units": "R14", "objective_class": "4",
    },
}


#: The labelled mode's motions (``DemoConfig.labelled``), one per MEGC2019 class, as the facial
#: actions that define them: negative = brows lowered and drawn together (AU 4), positive = lip
#: corners pulled up and out (AU 12), surprise = brows raised (AU 1+2). Same fields as ``MOTIONS``.
LABELLED_MOTIONS: dict[str, dict[str, Any]] = {
    "brows_lowered": {
        "bumps": [("eye_left", (0.03, -0.13), 60.0, 1.0), ("eye_right", (-0.03, -0.13), 120.0, 1.0)],
        "emotion": "Anger", "action_units": "4", "objective_class": "3",
    },
    "lip_corners_up": {
        "bumps": [("mouth_left", (-0.02, 0.0), 225.0, 1.0), ("mouth_right", (0.02, 0.0), 315.0, 1.0)],
        "emotion": "Happiness", "action_units": "12", "objective_class": "1",
    },
    "brows_raised": {
        "bumps": [("eye_left", (0.0, -0.15), 270.0, 1.0), ("eye_right", (0.0, -0.15), 270.0, 1.0)],
        "emotion": "Surprise", "action_units": "1+2", "objective_class": "7",
    },
}
#: Per kind, the emotions each labelled motion is annotated with (the clip's own drawn among
#: them), each mapped to its MEGC2019 class by ``sammflow.labels`` (CAS(ME)³ and MMEW: not in it).
LABELLED_EMOTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "samm": {"brows_lowered": ("Anger", "Contempt", "Disgust", "Fear", "Sadness"), "lip_corners_up": ("Happiness",),
             "brows_raised": ("Surprise",)},
    "casme2": {"brows_lowered": ("disgust", "repression"), "lip_corners_up": ("happiness",), "brows_raised": ("surprise",)},
    "smic": {"brows_lowered": ("negative",), "lip_corners_up": ("positive",), "brows_raised": ("surprise",)},
    "casme3a": {"brows_lowered": ("anger", "disgust"), "lip_corners_up": ("happy",), "brows_raised": ("surprise",)},
    "mmew": {"brows_lowered": ("disgust",), "lip_corners_up": ("happiness",), "brows_raised": ("surprise",)},
}


def _motion_spec(motion: str) -> dict[str, Any]:
    return MOTIONS[motion] if motion in MOTIONS else LABELLED_MOTIONS[motion]


@dataclass(frozen=True)
class _Layout:
    """How one dataset kind's release looks, as the demo writes it (see the module docstring)."""

    size: tuple[int, int]  # frame width, height
    annotations: str  # annotation file name, in OUT
    top: str  # folder in OUT that holds the clips ("": OUT itself)
    frame_name: str  # str.format of a frame's file name, from number, subject and padding
    emotions: dict[str, str]  # motion → the dataset's emotion label
    scale: tuple[float, float]  # range of the head's scale (photograph px → frame px) at this kind's frame height
    quirks: str
    head: tuple[int, int, int, int] = _HEAD_CLOSE
    first: tuple[int, int] | None = (1, 400)  # range of a clip's first frame number (None: every clip starts at 1)
    colour: bool = True


#: Every kind the demo writes. Face heights (``_FACE_BOX`` × scale): SAMM ≈ 290-370 px,
#: CASME II ≈ 220-250, SMIC ≈ 175-220, CAS(ME)³ A ≈ 265-330, MMEW ≈ 420-480.
LAYOUTS: dict[str, _Layout] = {
    "samm": _Layout(
        (FRAME_WIDTH, FRAME_HEIGHT), ANNOTATIONS, "", "{subject}_{number:0{padding}d}.jpg",
        {m: spec["emotion"] for m, spec in MOTIONS.items()}, (2.6, 3.4), head=_HEAD, first=(1000, 9000), colour=False,
        quirks="grey frames; frame numbers zero-padded to 5 or 4 digits by subject; samm.csv is ';'-separated with CRLF"),
    "casme2": _Layout(
        (640, 480), "CASME2-coding-20140508.xlsx", "CASME2_RAW_selected", "img{number}.jpg",
        {"brows_down": "disgust", "brows_up": "surprise", "smile": "happiness", "brows_down_smile": "others",
         "lip_corner_right": "repression"}, (2.0, 2.3),
        quirks="Subject is a number (1: folder sub01); the same Filename (EP02_01f) under several subjects; "
               "the second row's ApexFrame is the text '/' (its apex is only in this ground truth)"),
    "smic": _Layout(
        (640, 480), "smic.xlsx", "HS", "image{number:06d}.jpg",
        {"brows_down": "negative", "brows_up": "surprise", "smile": "positive", "brows_down_smile": "negative",
         "lip_corner_right": "negative"}, (1.6, 2.0), first=(1000, 60000),
        quirks="no apex column (every apex is only in this ground truth); a first, unnamed index column; "
               "clips sit in emotion folders (micro/negative/s1_ne_01)"),
    "casme3a": _Layout(
        (1280, 720), "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx", "part_A", "{number}.jpg",
        {"brows_down": "anger", "brows_up": "surprise", "smile": "happy", "brows_down_smile": "others",
         "lip_corner_right": "others"}, (2.4, 3.0), first=(1, 2000),
        quirks="sheet 'label', every cell text; two micro-expressions of one video (same Subject and Filename, "
               "frames one after the other in one <subject>/<Filename>/color folder); a depth folder of 16-bit "
               "PNGs beside color, to be ignored"),
    "mmew": _Layout(
        (1280, 960), "MMEW_Micro_Exp.xlsx", "Micro_Expression", "{number}.jpg",
        {"brows_down": "disgust", "brows_up": "surprise", "smile": "happiness", "brows_down_smile": "others",
         "lip_corner_right": "others"}, (3.8, 4.4), first=None,
        quirks="frames numbered 1, 2, ... within each clip; clips sit in emotion folders, not subject folders"),
}
KINDS = tuple(LAYOUTS)
#: How the head moves from frame to frame (``DemoConfig.jitter_kind``).
JITTER_KINDS = ("smooth", "uniform")


@dataclass(frozen=True)
class DemoConfig:
    """What the generator makes. Deterministic given all fields.

    Attributes
    ----------
    subjects : int
        Number of subjects (each a differently placed/scaled/lit face).
    clips_per_subject : int
    frames : int
        Frames per clip (onset→offset plus a few frames either side).
    amplitude : float
        Peak displacement of the local motion at apex, in frame pixels.
    jitter : float
        Size of the per-frame head translation, in frame pixels: its standard deviation
        (``jitter_kind="smooth"``), or the half-width of its range (``"uniform"``).
    jitter_kind : str
        ``"smooth"``: a slow drift, as a seated subject's head moves; ``"uniform"``: every
        frame independently uniform in ±``jitter`` on each axis (a demanding case for
        alignment: no two frames alike). Only ``"uniform"`` enters the hash.
    noise : float
        Standard deviation of the sensor noise, in grey levels.
    width, height : int
        Frame size; ``None``: the kind's own (SAMM 2040×1088, CASME II and SMIC 640×480,
        CAS(ME)³ A 1280×720, MMEW 1280×960).
    jpeg_quality : int
    seed : int
    kind : str
        Dataset layout and annotation format, one of ``KINDS``. Only a kind other than
        ``"samm"`` enters the hash (and ``ground_truth.json``), so SAMM demos keep theirs.
    labelled : bool
        A recognition benchmark instead of a motion catalogue: each clip shows one of the three
        ``LABELLED_MOTIONS`` (one per MEGC2019 class, balanced within each subject in a random
        order) and is annotated with an emotion of that class. Each subject does them in its
        own way (amplitude, place, direction), each clip varies again, and most clips add a
        weaker motion of another class, so that a model can learn the classes, but not
        trivially. Only ``True`` enters the hash; an unlabelled demo's frames and files are
        unchanged.
    """

    subjects: int = 3
    clips_per_subject: int = 2
    frames: int = 36
    amplitude: float = 4.0
    jitter: float = 1.5
    jitter_kind: str = "smooth"
    noise: float = 1.5
    width: int | None = None
    height: int | None = None
    jpeg_quality: int = 95
    seed: int = 0
    kind: str = "samm"
    labelled: bool = False

    def __post_init__(self) -> None:
        if self.kind not in LAYOUTS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.jitter_kind not in JITTER_KINDS:
            raise ValueError(f"jitter_kind must be one of {list(JITTER_KINDS)}, got {self.jitter_kind!r}")
        width, height = LAYOUTS[self.kind].size
        if self.width is None:
            object.__setattr__(self, "width", width)
        if self.height is None:
            object.__setattr__(self, "height", height)
        if not 1 <= self.subjects <= 99:
            raise ValueError(f"subjects must be in [1, 99], got {self.subjects}")
        if not 1 <= self.clips_per_subject <= 20:
            raise ValueError(f"clips_per_subject must be in [1, 20], got {self.clips_per_subject}")
        if self.frames < 5:
            raise ValueError(f"frames must be >= 5 (onset, apex and offset need room), got {self.frames}")
        if self.width < 640 or self.height < 480:
            raise ValueError(f"frame size must be at least 640×480, got {self.width}×{self.height}")

    def as_dict(self) -> dict[str, Any]:
        """The fields, as hashed and recorded in ``ground_truth.json`` (``kind`` only when not SAMM)."""
        fields = asdict(self)
        if self.kind == "samm":
            del fields["kind"]
        if self.jitter_kind == "smooth":
            del fields["jitter_kind"]
        if not self.labelled:
            del fields["labelled"]
        return fields

    @property
    def hash(self) -> str:
        return stable_hash({**self.as_dict(), "generator": _GENERATOR_VERSION})

    @property
    def annotations(self) -> str:
        """The annotation file's name, in the dataset folder."""
        return LAYOUTS[self.kind].annotations


def _head_image(region: tuple[int, int, int, int], colour: bool) -> np.ndarray:
    """The photograph's ``region`` (x1, y1, x2, y2), float32: H×W grey, or H×W×3 BGR if ``colour``."""
    from skimage import data  # the photograph ships inside the scikit-image wheel

    rgb = data.astronaut()
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR if colour else cv2.COLOR_RGB2GRAY)
    x1, y1, x2, y2 = region
    return image[y1:y2, x1:x2].astype(np.float32)


def _feather(shape: tuple[int, int], border: int) -> np.ndarray:
    """Alpha mask 1 inside, ramping smoothly to 0 over ``border`` px at the edges."""
    h, w = shape
    ramp_y = np.clip(np.minimum(np.arange(h), np.arange(h)[::-1]) / border, 0, 1)
    ramp_x = np.clip(np.minimum(np.arange(w), np.arange(w)[::-1]) / border, 0, 1)
    alpha = np.outer(ramp_y, ramp_x).astype(np.float32)
    return alpha * alpha * (3 - 2 * alpha)  # smoothstep


@dataclass
class _Subject:
    id: str
    source: np.ndarray  # float32 head photograph (source resolution, grey or BGR), contrast and mirroring applied
    alpha: np.ndarray  # float32 layer-sized feathered mask
    shape: tuple[int, int]  # layer size at frame scale, padding included
    origin: tuple[int, int]  # frame position of layer pixel (0, 0)
    scale: float
    mirrored: bool
    padding: int  # zero padding of frame numbers in SAMM's file names
    head: tuple[int, int, int, int]  # the photograph's region that ``source`` is

    def to_frame(self, x: float, y: float) -> tuple[float, float]:
        """Photograph coordinates → frame coordinates (zero jitter)."""
        hx = x - self.head[0]
        if self.mirrored:
            hx = (self.head[2] - self.head[0] - 1) - hx
        return self.origin[0] + _PAD + (hx + 0.5) * self.scale - 0.5, self.origin[1] + _PAD + (y - self.head[1] + 0.5) * self.scale - 0.5

    def face_box(self) -> list[float]:
        xa, ya = self.to_frame(_FACE_BOX[0], _FACE_BOX[1])
        xb, yb = self.to_frame(_FACE_BOX[2], _FACE_BOX[3])
        return [min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)]


_PAD = 12  # px of transparent margin around the head layer, room for jitter


def _make_subject(index: int, config: DemoConfig, head: np.ndarray, rng: np.random.Generator) -> _Subject:
    layout = LAYOUTS[config.kind]
    max_scale = (config.height - 2 * _PAD - 8) / head.shape[0]
    scale = float(min(max_scale, rng.uniform(*layout.scale)) * config.height / layout.size[1])
    scale = min(scale, max_scale)
    mirrored = bool(index % 2)
    image = head[:, ::-1] if mirrored else head
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    gain, bias = rng.uniform(0.8, 1.15), rng.uniform(-15, 15)
    source = np.clip(image * gain + bias, 0, 255).astype(np.float32)
    alpha = _feather((size[1], size[0]), border=max(8, size[0] // 12))
    alpha = cv2.copyMakeBorder(alpha, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_CONSTANT, value=0)
    layer = alpha  # only its shape is needed below
    free_x = config.width - layer.shape[1]
    free_y = config.height - layer.shape[0]
    origin = (int(rng.uniform(0.15, 0.85) * free_x), int(rng.uniform(0.3, 0.7) * max(free_y, 0)))
    return _Subject(_subject_id(config.kind, index), source, alpha, alpha.shape, origin, scale, mirrored,
                    padding=5 if index % 2 == 0 else 4, head=layout.head)


def _subject_id(kind: str, index: int) -> str:
    """The subject's id, as its folder (or, for MMEW, its clips' names) spells it."""
    if kind == "samm":
        return f"{[6, 11, 20, 7, 9, 14, 16, 18, 22, 23][index % 10] + 100 * (index // 10):03d}"
    return {"casme2": "sub{:02d}", "smic": "s{}", "casme3a": "spNO.{}", "mmew": "S{:02d}"}[kind].format(index + 1)


def _background(config: DemoConfig, rng: np.random.Generator) -> np.ndarray:
    """H×W grey, or H×W×3 BGR for a colour kind (a bluish grey wall)."""
    y = np.linspace(0, 1, config.height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, config.width, dtype=np.float32)[None, :]
    base = 45 + 25 * y + 10 * x
    texture = cv2.GaussianBlur(rng.normal(0, 6, (config.height, config.width)).astype(np.float32), (0, 0), 3)
    grey = base + texture
    return grey[..., None] * np.float32([1.12, 1.0, 0.9]) if LAYOUTS[config.kind].colour else grey


def _bumps(subject: _Subject, spec: list[tuple[str, tuple[float, float], float, float]], amplitude: float) -> list[dict[str, Any]]:
    """A motion's ``bumps`` (``MOTIONS``' form) placed on ``subject``'s face, as ``ground_truth.json`` records them."""
    face_h = (_FACE_BOX[3] - _FACE_BOX[1]) * subject.scale
    out = []
    for landmark, (ox, oy), direction, weight in spec:
        lx, ly = _LANDMARKS[landmark]
        cx, cy = subject.to_frame(lx, ly)
        sign = -1.0 if subject.mirrored else 1.0  # offsets are in the photograph's left/right
        cx += sign * ox * face_h
        cy += oy * face_h
        if subject.mirrored:  # a mirrored face moves mirrored
            direction = (180.0 - direction) % 360.0
        rad = math.radians(direction)
        out.append({
            "center": [round(cx, 3), round(cy, 3)],
            "sigma": round(0.075 * face_h, 3),
            "displacement": [round(amplitude * weight * math.cos(rad), 4), round(amplitude * weight * math.sin(rad), 4)],
            "direction_deg": round(direction, 3),
        })
    return out


@dataclass(frozen=True)
class _Style:
    """How one subject of a labelled demo makes its expressions: amplitude gain, place shift (face
    heights), direction turn (degrees), and how strongly it mixes in another class's motion."""

    gain: float
    shift: tuple[float, float]
    turn: float
    mix: float


def _style(rng: np.random.Generator) -> _Style:
    return _Style(gain=float(rng.uniform(0.5, 1.5)), shift=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.04, 0.04))),
                  turn=float(rng.uniform(-35, 35)), mix=float(rng.uniform(0.4, 0.9)))


def _labelled_spec(motion: str, style: _Style, rng: np.random.Generator) -> list[tuple[str, tuple[float, float], float, float]]:
    """A labelled clip's bumps: its class's motion as the subject makes it, varied again per clip
    (amplitude, place, direction), and in 60 % of the clips a weaker motion of another class."""
    gain = style.gain * rng.uniform(0.7, 1.3)
    turn = style.turn + rng.uniform(-10, 10)
    dx, dy = style.shift[0] + rng.uniform(-0.01, 0.01), style.shift[1] + rng.uniform(-0.01, 0.01)
    spec = [(landmark, (ox + dx, oy + dy), direction + turn, weight * gain)
            for landmark, (ox, oy), direction, weight in LABELLED_MOTIONS[motion]["bumps"]]
    if rng.uniform() < 0.6:
        others = [m for m in LABELLED_MOTIONS if m != motion]
        other = others[int(rng.integers(len(others)))]
        weight = style.mix * rng.uniform(0.5, 1.0)
        spec += [(landmark, offset, direction + rng.uniform(-20, 20), w * weight)
                 for landmark, offset, direction, w in LABELLED_MOTIONS[other]["bumps"]]
    return spec


def _labelled_motions(clips: int, rng: np.random.Generator) -> list[str]:
    """One subject's clips' motions: the three classes in turn (balanced), in a random order."""
    names = list(LABELLED_MOTIONS)
    return [names[i] for i in rng.permutation([c % len(names) for c in range(clips)])]


def displacement_field(bumps: list[dict[str, Any]], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """The local motion at apex, evaluated at frame coordinates ``xs``, ``ys`` (same shape).

    Returns
    -------
    ndarray, float32, shape xs.shape + (2,)
        Displacement ``(dx, dy)`` in frame pixels: a sum of Gaussian bumps.
    """
    field = np.zeros(xs.shape + (2,), dtype=np.float32)
    for bump in bumps:
        (cx, cy), sigma, (dx, dy) = bump["center"], bump["sigma"], bump["displacement"]
        weight = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2.0 * sigma**2)).astype(np.float32)
        field[..., 0] += weight * dx
        field[..., 1] += weight * dy
    return field


def motion_profile(frame: int, onset: int, apex: int, offset: int) -> float:
    """Motion amplitude in [0, 1]: 0 up to onset, raised-cosine rise to 1 at apex, fall to 0 at offset."""
    if frame <= onset or frame >= offset:
        return 0.0
    if frame <= apex:
        return 0.5 - 0.5 * math.cos(math.pi * (frame - onset) / max(apex - onset, 1))
    return 0.5 + 0.5 * math.cos(math.pi * (frame - apex) / max(offset - apex, 1))


def generate_demo(
    out_dir: str | Path,
    config: DemoConfig = DemoConfig(),
    *,
    progress: Callable[[int, int, str], None] | None = None,
) -> Path:
    """Write a demo dataset in the layout of ``config.kind`` (SAMM's: ``OUT/<subject>/<clip>/<subject>_<frame>.jpg``
    and ``OUT/samm.csv``; the others: see the module docstring), with ``OUT/ground_truth.json``.

    The dataset is built in a temporary sibling folder and renamed into place, so an
    interrupted run leaves nothing half-written. An existing demo made with the same
    config is reused as is; any other existing non-empty folder is refused.

    Returns
    -------
    Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    existing = existing_hash(out_dir)
    if existing == config.hash:
        return out_dir
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        what = "a demo dataset made with other settings" if existing else "not a sammflow demo dataset"
        raise FileExistsError(f"{show_path(out_dir)}: already exists and is {what}; choose an empty or new folder")
    return build_folder(out_dir, lambda staging: _write_demo(staging, config, progress))


def build_folder(out_dir: Path, write: Callable[[Path], None]) -> Path:
    """Make ``out_dir`` (absent or empty) by ``write(staging)`` into a temporary sibling folder
    renamed into place: an interrupted run leaves nothing half-written. Returns ``out_dir``."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        write(staging)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked by the caller
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def existing_hash(out_dir: Path) -> str | None:
    """The config hash in ``out_dir``'s ground_truth.json (a demo, or a set built like one), if any."""
    try:
        return json.loads((out_dir / GROUND_TRUTH).read_text())["config_hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class _Clip:
    """Where a clip goes: its annotation's Filename, its id (unique in the dataset) and its frames' folder."""

    filename: str
    id: str
    folder: tuple[str, ...]  # below the dataset folder


_SMIC_CODES = {"negative": "ne", "positive": "po", "surprise": "sur"}


def _place_clip(kind: str, subject: str, s: int, c: int, emotion: str, earlier: list[str]) -> _Clip:
    """Clip ``c`` of the ``s``-th subject, named as ``kind`` names it; ``earlier``: the Filenames of
    the subject's clips before it. Ids as ``sammflow.kinds`` makes them: the Filename where it
    starts with the subject, else ``<subject>_<Filename>``; ``_2`` … for a Filename's later rows."""
    top = (LAYOUTS[kind].top,) if LAYOUTS[kind].top else ()
    if kind == "samm":
        name = f"{subject}_{c + 1}_{s % 3 + 1}"
        return _Clip(name, name, (subject, name))
    if kind == "casme2":  # every subject's first clip is EP02_01f: one Filename under several subjects
        name = "EP02_01f" if c == 0 else f"EP{(3 * s + 2 * c) % 17 + 3:02d}_{c + 1:02d}f"
        return _Clip(name, f"{subject}_{name}", (*top, subject, name))
    if kind == "smic":
        prefix = f"{subject}_{_SMIC_CODES[emotion]}_"
        name = f"{prefix}{sum(e.startswith(prefix) for e in earlier) + 1:02d}"
        return _Clip(name, name, (*top, subject, "micro", emotion, name))
    if kind == "casme3a":  # even-numbered subjects' videos each hold two micro-expressions: a, a, b, b, …
        name = chr(ord("a") + (c // 2 if s % 2 == 0 else c))
        repeat = earlier.count(name) + 1
        return _Clip(name, f"{subject}_{name}" + (f"_{repeat}" if repeat > 1 else ""), (*top, subject, name, "color"))
    name = f"{subject}_{c // 4 + 1:02d}_{c + 1:03d}"  # mmew
    return _Clip(name, name, (*top, emotion, name))


def _write_demo(root: Path, config: DemoConfig, progress: Callable[[int, int, str], None] | None) -> None:
    layout = LAYOUTS[config.kind]
    rng = np.random.default_rng(config.seed)
    head = _head_image(layout.head, layout.colour)
    background = _background(config, rng)
    motions = list(MOTIONS)
    # the labelled mode draws from its own generator, so the frames' draws stay as they are
    labels_rng = np.random.default_rng([config.seed, 16])
    total = config.subjects * config.clips_per_subject * config.frames
    done = 0
    rows: list[dict[str, Any]] = []
    clips_truth = []
    for s in range(config.subjects):
        subject = _make_subject(s, config, head, rng)
        filenames: list[str] = []
        last = 0
        if config.labelled:
            style = _style(labels_rng)
            labelled = _labelled_motions(config.clips_per_subject, labels_rng)
        for c in range(config.clips_per_subject):
            if config.labelled:
                motion = labelled[c]
                choices = LABELLED_EMOTIONS[config.kind][motion]
                emotion = choices[int(labels_rng.integers(len(choices)))]
                spec = _labelled_spec(motion, style, labels_rng)
            else:
                motion = motions[(s * config.clips_per_subject + c) % len(motions)]
                emotion = layout.emotions[motion]
                spec = MOTIONS[motion]["bumps"]
            clip = _place_clip(config.kind, subject.id, s, c, emotion, filenames)
            same_video = clip.filename in filenames  # CAS(ME)³: the video's next micro-expression, just after the last
            filenames.append(clip.filename)
            if same_video:
                first = last + 1
            elif layout.first is None:
                first = 1
            else:
                low, high = layout.first
                first = int(rng.integers(low, max(high - config.frames, low + 1)))
            last = first + config.frames - 1
            lead = max(1, config.frames // 12)
            onset = first + lead
            offset = first + config.frames - 1 - lead
            apex = onset + int(round((offset - onset) * rng.uniform(0.4, 0.6)))
            bumps = _bumps(subject, spec, config.amplitude)
            jitter = _jitter_track(config.frames, config.jitter, rng, config.jitter_kind)
            clip_dir = root.joinpath(*clip.folder)
            clip_dir.mkdir(parents=True, exist_ok=True)
            if config.kind == "casme3a" and not same_video:
                _write_depth(clip_dir.parent / "depth", (first, first + 1), config, subject)
            ys, xs = np.mgrid[0:subject.shape[0], 0:subject.shape[1]].astype(np.float32)
            field = displacement_field(bumps, xs + subject.origin[0], ys + subject.origin[1])
            frames_truth = []
            for i in range(config.frames):
                number = first + i
                amount = motion_profile(number, onset, apex, offset)
                jx, jy = jitter[i]
                image = _render(background, subject, field * amount, (jx, jy), config.noise, rng)
                name = layout.frame_name.format(subject=subject.id, number=number, padding=subject.padding)
                # encoded here and written by Python: OpenCV's path-taking imwrite mishandles (and
                # has crashed on) folder names that are not UTF-8
                ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
                if not ok:  # pragma: no cover - a uint8 grey or BGR image always encodes
                    raise RuntimeError(f"cannot encode frame {number} of {clip.id} as JPEG")
                (clip_dir / name).write_bytes(encoded.tobytes())
                frames_truth.append({"frame": number, "jitter": [round(float(jx), 4), round(float(jy), 4)], "motion": round(amount, 5)})
                done += 1
                if progress:
                    progress(done, total, clip.id)
            # the table hides an apex: every one of SMIC's, and one of CASME II's (its second row, as '/')
            hidden = config.kind == "smic" or (config.kind == "casme2" and len(rows) == 1)
            rows.append({"subject": subject.id, "filename": clip.filename, "onset": onset, "apex": None if hidden else apex,
                         "offset": offset, "motion": motion, "emotion": emotion})
            entry: dict[str, Any] = {"subject": subject.id, "clip": clip.id, "onset": onset, "apex": apex, "offset": offset,
                                     "motion": motion}
            if config.kind != "samm":  # SAMM's entries stay as they were, byte for byte
                entry = {"kind": config.kind, "subject": subject.id, "clip": clip.id, "filename": clip.filename,
                         "folder": "/".join(clip.folder), "frame_name": layout.frame_name, "onset": onset, "apex": apex,
                         "offset": offset, "annotated_apex": rows[-1]["apex"], "motion": motion, "emotion": emotion}
            clips_truth.append({**entry, "bumps": bumps, "face_box": [round(v, 2) for v in subject.face_box()], "frames": frames_truth})
    _write_annotations(root, config.kind, rows)
    truth: dict[str, Any] = {
        "description": "sammflow demo dataset. Frame px, +x right, +y down. Each frame's head is translated by "
                       "'jitter'; the local motion is 'motion' × the sum of Gaussian 'bumps' (displacement at apex). "
                       "Rendering samples the source at x - motion(x) - jitter.",
        "config": config.as_dict(), "config_hash": config.hash, "frame_size": [config.width, config.height],
    }
    if config.kind != "samm":
        truth.update(kind=config.kind, annotations=layout.annotations, colour=layout.colour, quirks=layout.quirks)
    truth["clips"] = clips_truth
    (root / GROUND_TRUTH).write_text(json.dumps(truth, indent=1))


def _write_annotations(root: Path, kind: str, rows: list[dict[str, Any]]) -> None:
    """The kind's annotation file (``LAYOUTS[kind].annotations``), one row per clip; ``rows``:
    subject, filename, onset, apex (``None``: not in the table), offset, motion, emotion."""
    units = [_motion_spec(r["motion"])["action_units"] for r in rows]
    if kind == "samm":
        header = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
                  "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]
        lines = [[r["subject"], r["filename"], "1", str(r["onset"]), str(r["apex"]), str(r["offset"]), str(r["offset"] - r["onset"] + 1),
                  "Micro - 1/2", au, r["emotion"], _motion_spec(r["motion"])["objective_class"], f"demo: {r['motion']}"]
                 for r, au in zip(rows, units)]
        with open(root / ANNOTATIONS, "w", newline="", encoding="utf-8") as fh:  # SAMM's own format: ';' and CRLF
            fh.write("".join(";".join(line) + "\r\n" for line in [header, *lines]))
        return
    sheet = "Sheet1"
    if kind == "casme2":
        header = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"]
        table = [[int(r["subject"].removeprefix("sub")), r["filename"], r["onset"], "/" if r["apex"] is None else r["apex"],
                  r["offset"], au, r["emotion"]] for r, au in zip(rows, units)]
    elif kind == "smic":  # as pandas writes a frame: its index is the first column, unnamed
        header = [None, "subject", "material", "emotion", "onset", "offset"]
        table = [[i, r["subject"], r["filename"], r["emotion"], r["onset"], r["offset"]] for i, r in enumerate(rows)]
    elif kind == "casme3a":
        sheet = "label"
        header = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"]
        table = [[r["subject"], r["filename"], str(r["onset"]), str(r["apex"]), str(r["offset"]), au,
                  _motion_spec(r["motion"])["objective_class"], r["emotion"]] for r, au in zip(rows, units)]
    else:  # mmew
        header = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", "Action Units", "Estimated Emotion"]
        table = [[r["subject"], r["filename"], r["onset"], r["apex"], r["offset"], au, r["emotion"]] for r, au in zip(rows, units)]
    _write_xlsx(root / LAYOUTS[kind].annotations, sheet, [header, *table])


def _write_xlsx(path: Path, sheet: str, rows: list[list[Any]]) -> None:
    """One sheet of ``rows`` (``None``: an empty cell), saved by Python's own file writing (see the frames)."""
    from io import BytesIO

    from openpyxl import Workbook

    book = Workbook()
    table = book.active
    table.title = sheet
    for row in rows:
        table.append(row)
    buffer = BytesIO()
    book.save(buffer)
    path.write_bytes(buffer.getvalue())


def _write_depth(folder: Path, numbers: tuple[int, ...], config: DemoConfig, subject: _Subject) -> None:
    """CAS(ME)³'s depth frames beside the colour ones: 16-bit PNGs (mm, the face nearer) named
    like the colour frames, which a reader must ignore."""
    folder.mkdir(parents=True, exist_ok=True)
    x1, y1, x2, y2 = subject.face_box()
    ys, xs = np.mgrid[0:config.height, 0:config.width].astype(np.float32)
    face = np.exp(-2 * (((xs - (x1 + x2) / 2) / (x2 - x1)) ** 2 + ((ys - (y1 + y2) / 2) / (y2 - y1)) ** 2))
    ok, encoded = cv2.imencode(".png", (1200 - 400 * face).astype(np.uint16))
    if not ok:  # pragma: no cover - a uint16 image always encodes
        raise RuntimeError(f"cannot encode a depth frame of {subject.id} as PNG")
    for number in numbers:
        (folder / f"{number}.png").write_bytes(encoded.tobytes())


def _jitter_track(n: int, std: float, rng: np.random.Generator, kind: str = "smooth") -> np.ndarray:
    """Random head translation per frame, (n, 2) frame px: smooth, zero mean, ≈ ``std``; or
    (``kind="uniform"``) independent per frame, uniform in ±``std``."""
    if std == 0:
        return np.zeros((n, 2))
    if kind == "uniform":
        return np.round(rng.uniform(-std, std, (n, 2)) * 32) / 32
    steps = rng.normal(0, 1, (n + 8, 2))
    kernel = np.hanning(7)
    kernel /= kernel.sum()
    track = np.stack([np.convolve(steps[:, k], kernel, mode="same") for k in range(2)], axis=1)[4:n + 4]
    track -= track.mean(axis=0)
    scale = track.std(axis=0)
    # multiples of 1/32 px: cv2.remap positions are exact at that resolution, so the
    # rendered shift is exactly the recorded one
    return np.round(track * (std / np.where(scale > 0, scale, 1)) * 32) / 32


def _render(background: np.ndarray, subject: _Subject, field: np.ndarray, jitter: tuple[float, float], noise: float, rng: np.random.Generator) -> np.ndarray:
    """One frame, uint8: H×W grey or H×W×3 BGR, as ``background`` is."""
    h, w = subject.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    map_x = xs - field[..., 0] - np.float32(jitter[0])
    map_y = ys - field[..., 1] - np.float32(jitter[1])
    alpha = cv2.remap(subject.alpha, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # one resampling from the photograph, as a camera samples a scene: the sub-pixel phase
    # varies across the face, so a jitter does not change the image's sharpness
    s = np.float32(subject.scale)
    src_x = (map_x - _PAD + 0.5) / s - 0.5
    src_y = (map_y - _PAD + 0.5) / s - 0.5
    layer = cv2.remap(subject.source, src_x, src_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    frame = background.copy()
    ox, oy = subject.origin
    region = frame[oy:oy + h, ox:ox + w]
    if frame.ndim == 3:
        alpha = alpha[..., None]
    region[...] = region * (1 - alpha) + layer * alpha
    if noise > 0:
        grain = rng.normal(0, noise, frame.shape[:2]).astype(np.float32)
        frame += grain if frame.ndim == 2 else grain[..., None]  # the same in each channel: the grey keeps std ``noise``
    return np.clip(np.round(frame), 0, 255).astype(np.uint8)


def read_ground_truth(root: str | Path) -> dict[str, Any]:
    """The demo's ``ground_truth.json``, with clips indexed by id under ``"by_clip"`` and its
    ``"kind"`` (a SAMM demo's file does not say it)."""
    truth = json.loads((Path(root) / GROUND_TRUTH).read_text())
    truth.setdefault("kind", "samm")
    truth["by_clip"] = {c["clip"]: c for c in truth["clips"]}
    return truth
