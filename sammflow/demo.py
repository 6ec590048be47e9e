"""A demo dataset in SAMM layout, generated from a real face photograph.

SAMM is licensed, so everything that must run anywhere (the app's default dataset, tests,
benchmarks) runs on this instead. The face is scikit-image's ``astronaut`` (shipped inside
the wheel: no download). Each subject is that face at a different scale, place, contrast
and mirroring; each clip adds per-frame sub-pixel head jitter, sensor noise, and a known
local motion that rises from onset to apex and falls to offset. ``ground_truth.json``
records all of it, so alignment and flow can be measured against the truth.

Coordinates in the ground truth are frame pixels, +x right, +y down. The local motion's
bumps stay where the ground truth puts them, whatever the jitter (the head moves under them),
and they are a pull field: frame pixel x shows the head at x − motion(x) − jitter, so the
forward onset→apex flow g at x solves g = motion(x + g) (``bench/fidelity.py``,
``true_flow_in_crop``).
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


@dataclass(frozen=True)
class DemoConfig:
    """What the generator makes. Deterministic given all fields.

    Attributes
    ----------
    subjects : int
        Number of subjects (each a differently placed/scaled/lit face).
    clips_per_subject : int
    frames : int
        Frames per clip folder (onset→offset plus a few frames either side).
    amplitude : float
        Peak displacement of the local motion at apex, in frame pixels.
    jitter : float
        Standard deviation of the per-frame head translation, in frame pixels.
    noise : float
        Standard deviation of the sensor noise, in grey levels.
    width, height : int
        Frame size (SAMM: 2040×1088).
    seed : int
    """

    subjects: int = 3
    clips_per_subject: int = 2
    frames: int = 36
    amplitude: float = 4.0
    jitter: float = 1.5
    noise: float = 1.5
    width: int = FRAME_WIDTH
    height: int = FRAME_HEIGHT
    jpeg_quality: int = 95
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.subjects <= 99:
            raise ValueError(f"subjects must be in [1, 99], got {self.subjects}")
        if not 1 <= self.clips_per_subject <= 20:
            raise ValueError(f"clips_per_subject must be in [1, 20], got {self.clips_per_subject}")
        if self.frames < 5:
            raise ValueError(f"frames must be >= 5 (onset, apex and offset need room), got {self.frames}")
        if self.width < 640 or self.height < 480:
            raise ValueError(f"frame size must be at least 640×480, got {self.width}×{self.height}")

    @property
    def hash(self) -> str:
        return stable_hash({**asdict(self), "generator": _GENERATOR_VERSION})


def _head_image() -> np.ndarray:
    from skimage import data  # the photograph ships inside the scikit-image wheel

    rgb = data.astronaut()
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    x1, y1, x2, y2 = _HEAD
    return grey[y1:y2, x1:x2].astype(np.float32)


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
    source: np.ndarray  # float32 head photograph (source resolution), contrast and mirroring applied
    alpha: np.ndarray  # float32 layer-sized feathered mask
    shape: tuple[int, int]  # layer size at frame scale, padding included
    origin: tuple[int, int]  # frame position of layer pixel (0, 0)
    scale: float
    mirrored: bool
    padding: int  # zero padding of frame numbers in file names

    def to_frame(self, x: float, y: float) -> tuple[float, float]:
        """Photograph coordinates → frame coordinates (zero jitter)."""
        hx = x - _HEAD[0]
        if self.mirrored:
            hx = (_HEAD[2] - _HEAD[0] - 1) - hx
        return self.origin[0] + _PAD + (hx + 0.5) * self.scale - 0.5, self.origin[1] + _PAD + (y - _HEAD[1] + 0.5) * self.scale - 0.5

    def face_box(self) -> list[float]:
        xa, ya = self.to_frame(_FACE_BOX[0], _FACE_BOX[1])
        xb, yb = self.to_frame(_FACE_BOX[2], _FACE_BOX[3])
        return [min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)]


_PAD = 12  # px of transparent margin around the head layer, room for jitter


def _make_subject(index: int, config: DemoConfig, head: np.ndarray, rng: np.random.Generator) -> _Subject:
    max_scale = (config.height - 2 * _PAD - 8) / head.shape[0]
    scale = float(min(max_scale, rng.uniform(2.6, 3.4)) * config.height / FRAME_HEIGHT)
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
    subject_id = f"{[6, 11, 20, 7, 9, 14, 16, 18, 22, 23][index % 10] + 100 * (index // 10):03d}"
    return _Subject(subject_id, source, alpha, alpha.shape, origin, scale, mirrored, padding=5 if index % 2 == 0 else 4)


def _background(config: DemoConfig, rng: np.random.Generator) -> np.ndarray:
    y = np.linspace(0, 1, config.height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, config.width, dtype=np.float32)[None, :]
    base = 45 + 25 * y + 10 * x
    texture = cv2.GaussianBlur(rng.normal(0, 6, (config.height, config.width)).astype(np.float32), (0, 0), 3)
    return base + texture


def _bumps(subject: _Subject, motion: str, amplitude: float) -> list[dict[str, Any]]:
    face_h = (_FACE_BOX[3] - _FACE_BOX[1]) * subject.scale
    out = []
    for landmark, (ox, oy), direction, weight in MOTIONS[motion]["bumps"]:
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
    """Write a demo dataset: ``OUT/<subject>/<clip>/<subject>_<frame>.jpg``, ``OUT/samm.csv``
    and ``OUT/ground_truth.json``.

    The dataset is built in a temporary sibling folder and renamed into place, so an
    interrupted run leaves nothing half-written. An existing demo made with the same
    config is reused as is; any other existing non-empty folder is refused.

    Returns
    -------
    Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    existing = _existing_demo(out_dir)
    if existing == config.hash:
        return out_dir
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        what = "a demo dataset made with other settings" if existing else "not a sammflow demo dataset"
        raise FileExistsError(f"{show_path(out_dir)}: already exists and is {what}; choose an empty or new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _write_demo(staging, config, progress)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _existing_demo(out_dir: Path) -> str | None:
    try:
        return json.loads((out_dir / GROUND_TRUTH).read_text())["config_hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_demo(root: Path, config: DemoConfig, progress: Callable[[int, int, str], None] | None) -> None:
    rng = np.random.default_rng(config.seed)
    head = _head_image()
    background = _background(config, rng)
    motions = list(MOTIONS)
    total = config.subjects * config.clips_per_subject * config.frames
    done = 0
    rows = []
    clips_truth = []
    for s in range(config.subjects):
        subject = _make_subject(s, config, head, rng)
        for c in range(config.clips_per_subject):
            clip_id = f"{subject.id}_{c + 1}_{s % 3 + 1}"
            motion = motions[(s * config.clips_per_subject + c) % len(motions)]
            first = int(rng.integers(1000, 9000 - config.frames))
            lead = max(1, config.frames // 12)
            onset = first + lead
            offset = first + config.frames - 1 - lead
            apex = onset + int(round((offset - onset) * rng.uniform(0.4, 0.6)))
            bumps = _bumps(subject, motion, config.amplitude)
            jitter = _jitter_track(config.frames, config.jitter, rng)
            clip_dir = root / subject.id / clip_id
            clip_dir.mkdir(parents=True)
            ys, xs = np.mgrid[0:subject.shape[0], 0:subject.shape[1]].astype(np.float32)
            field = displacement_field(bumps, xs + subject.origin[0], ys + subject.origin[1])
            frames_truth = []
            for i in range(config.frames):
                number = first + i
                amount = motion_profile(number, onset, apex, offset)
                jx, jy = jitter[i]
                image = _render(background, subject, field * amount, (jx, jy), config.noise, rng)
                name = f"{subject.id}_{number:0{subject.padding}d}.jpg"
                # encoded here and written by Python: OpenCV's path-taking imwrite mishandles (and
                # has crashed on) folder names that are not UTF-8
                ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
                if not ok:  # pragma: no cover - a uint8 grey image always encodes
                    raise RuntimeError(f"cannot encode frame {number} of {clip_id} as JPEG")
                (clip_dir / name).write_bytes(encoded.tobytes())
                frames_truth.append({"frame": number, "jitter": [round(float(jx), 4), round(float(jy), 4)], "motion": round(amount, 5)})
                done += 1
                if progress:
                    progress(done, total, clip_id)
            spec = MOTIONS[motion]
            rows.append([subject.id, clip_id, "1", str(onset), str(apex), str(offset), str(offset - onset + 1),
                         "Micro - 1/2", spec["action_units"], spec["emotion"], spec["objective_class"], f"demo: {motion}"])
            clips_truth.append({
                "subject": subject.id, "clip": clip_id, "onset": onset, "apex": apex, "offset": offset,
                "motion": motion, "bumps": bumps, "face_box": [round(v, 2) for v in subject.face_box()],
                "frames": frames_truth,
            })
    header = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
              "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]
    with open(root / ANNOTATIONS, "w", newline="", encoding="utf-8") as fh:  # SAMM's own format: ';' and CRLF
        fh.write("".join(";".join(r) + "\r\n" for r in [header, *rows]))
    truth = {
        "description": "sammflow demo dataset. Frame px, +x right, +y down. Each frame's head is translated by "
                       "'jitter'; the local motion is 'motion' × the sum of Gaussian 'bumps' (displacement at apex). "
                       "Rendering samples the source at x - motion(x) - jitter.",
        "config": asdict(config), "config_hash": config.hash, "frame_size": [config.width, config.height],
        "clips": clips_truth,
    }
    (root / GROUND_TRUTH).write_text(json.dumps(truth, indent=1))


def _jitter_track(n: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth random head translation per frame, (n, 2) frame px, zero mean, ≈ ``std``."""
    if std == 0:
        return np.zeros((n, 2))
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
    region[...] = region * (1 - alpha) + layer * alpha
    if noise > 0:
        frame += rng.normal(0, noise, frame.shape).astype(np.float32)
    return np.clip(np.round(frame), 0, 255).astype(np.uint8)


def read_ground_truth(root: str | Path) -> dict[str, Any]:
    """The demo's ``ground_truth.json``, with clips indexed by id under ``"by_clip"``."""
    truth = json.loads((Path(root) / GROUND_TRUTH).read_text())
    truth["by_clip"] = {c["clip"]: c for c in truth["clips"]}
    return truth
