"""The SAMM-scale benchmark set: the real ``samm.csv``'s clip list, rendered like the demo.

    .venv/bin/python bench/samm_scale.py              # all 159 rows (157 valid clips + the two impossible rows)
    .venv/bin/python bench/samm_scale.py --clips 12   # the first 12 rows and the two impossible rows (smoke runs)

Builds, from the real annotation file (``tests/data/samm.csv``: 159 rows, 29 subjects), a
folder in SAMM's layout, ``<subject>/<clip>/<subject>_<frame, 5 digits>.jpg``, holding for
every row only its onset and apex frames (what ``export`` reads), and a copy of the
annotation file as ``samm.csv`` (its rows byte for byte, so the two impossible rows,
028_4_1 and 032_3_1, are reported as a real user sees them; with ``--clips`` only the rows
kept). Frames are SAMM-size (2040×1088) grey JPEGs rendered by ``sammflow.demo``'s own
renderer: each of the 29 subjects is the demo's face photograph at its own scale, place,
contrast and mirroring; every frame has an independent head jitter, uniform in ±3 px on each
axis, and sensor noise σ = 1; the apex frame carries a local motion (the demo's Gaussian
bumps, 4 px peak) chosen by the row's emotion. ``ground_truth.json`` records all of it in the
demo's format (``sammflow.demo.read_ground_truth`` reads it; offsets are the file's, but
offset frames are not on disk, so every clip also reports its offset frame missing, which the
command line does not list as a problem).

Deterministic: every subject and every row draws from its own random stream (seeded by the
seed and the subject's / row's position in the full file), so a ``--clips`` set's clips are
the full set's clips, pixel for pixel. Cached under ``bench/data/samm-scale-<hash>``, the
hash of every input (the annotation file's bytes, the rows kept, the rendering settings and
the demo renderer's version); built in a staging folder and renamed into place, as
``sammflow.demo.generate_demo`` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from sammflow import demo  # noqa: E402
from sammflow.annotations import read_annotations  # noqa: E402
from sammflow.params import stable_hash  # noqa: E402

DATA = ROOT / "bench" / "data"
#: The real annotation file whose clip list the set reproduces.
ANNOTATIONS = ROOT / "tests" / "data" / "samm.csv"
#: Bump when the same config would render different files.
VERSION = 1
#: The row's estimated emotion → the demo's local motion at the apex (others: ``brows_down_smile``).
MOTION_OF = {"Anger": "brows_down", "Disgust": "brows_down", "Fear": "brows_up", "Sadness": "brows_down",
             "Surprise": "brows_up", "Happiness": "smile", "Contempt": "lip_corner_right", "Other": "brows_down_smile"}
PADDING = 5  # digits of the frame number in file names


@dataclass(frozen=True)
class SammScaleConfig:
    """What the SAMM-scale set is made of.

    Attributes
    ----------
    annotations : str
        The annotation file whose rows are rendered (hashed by its bytes, not its path).
    clips : int or None
        Keep only the first ``clips`` rows of the file, plus every row it rejects (the
        impossible ones); ``None``: every row.
    jitter : float
        Head jitter per frame, uniform in ±``jitter`` frame px on each axis, independent per frame.
    noise : float
        Sensor noise σ, grey levels.
    amplitude : float
        Peak local motion at the apex, frame px.
    jpeg_quality, seed : int
    """

    annotations: str = str(ANNOTATIONS)
    clips: int | None = None
    jitter: float = 3.0
    noise: float = 1.0
    amplitude: float = 4.0
    jpeg_quality: int = 95
    seed: int = 13

    def as_dict(self) -> dict[str, Any]:
        fields = asdict(self)
        fields["annotations"] = Path(self.annotations).name
        return fields

    @property
    def hash(self) -> str:
        digest = hashlib.sha256(Path(self.annotations).read_bytes()).hexdigest()
        return stable_hash({**self.as_dict(), "annotations_sha256": digest, "version": VERSION,
                            "demo_generator": demo._GENERATOR_VERSION})

    @property
    def name(self) -> str:
        """The set's folder name under ``bench/data``."""
        return f"samm-scale-{self.hash}"


@dataclass(frozen=True)
class Row:
    """One row of the annotation file, valid or rejected."""

    row: int  # 1-based line of the file (the header is line 1)
    subject: str
    clip: str
    onset: int
    apex: int
    offset: int
    emotion: str
    valid: bool


def rows_of(path: str | Path) -> list[Row]:
    """Every data row of the annotation file, in file order, as ``read_annotations`` reads it:
    its valid clips and its rejected rows (whose frame numbers are still integers here)."""
    annotations = read_annotations(path)
    rows = [Row(c.row, c.subject, c.clip, c.onset, c.apex, c.offset, c.emotion, True) for c in annotations.clips]
    for r in annotations.rejected:
        try:
            numbers = [int(r.values[k]) for k in ("onset", "apex", "offset")]
        except (KeyError, ValueError):
            continue  # a frame number that is not one: nothing to render
        rows.append(Row(r.row, r.subject, r.clip, *numbers, r.values.get("emotion", ""), False))
    return sorted(rows, key=lambda r: r.row)


def chosen_rows(rows: list[Row], clips: int | None) -> list[Row]:
    """The first ``clips`` rows and every rejected row (all rows if ``clips`` is None)."""
    if clips is None:
        return rows
    return [r for i, r in enumerate(rows) if i < clips or not r.valid]


def generate_samm_scale(out_dir: str | Path | None = None, config: SammScaleConfig = SammScaleConfig(), *,
                        progress: Callable[[int, int, str], None] | None = None) -> Path:
    """Write the set (module docstring) to ``out_dir`` (default ``bench/data/<config.name>``);
    reuse it if it holds this config's set already. Returns the folder."""
    out_dir = Path(out_dir) if out_dir is not None else DATA / config.name
    if demo.existing_hash(out_dir) == config.hash:
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: exists and is not this SAMM-scale set; remove it or choose another folder")
    return demo.build_folder(out_dir, lambda staging: _write(staging, config, progress))


def _write(root: Path, config: SammScaleConfig, progress: Callable[[int, int, str], None] | None) -> None:
    source = Path(config.annotations)
    every = rows_of(source)
    rows = chosen_rows(every, config.clips)
    # the annotation file's own lines (header and kept rows), bytes untouched: ';', CRLF, its encoding
    lines = source.read_bytes().splitlines(keepends=True)
    keep = {1, *(r.row for r in rows)}
    (root / demo.ANNOTATIONS).write_bytes(b"".join(line for number, line in enumerate(lines, 1) if number in keep))
    # the demo's renderer, at SAMM's frame size; the subject index follows the full file's order
    render = demo.DemoConfig(jitter=config.jitter, jitter_kind="uniform", noise=config.noise, amplitude=config.amplitude,
                             jpeg_quality=config.jpeg_quality, seed=config.seed)
    subjects_in_order = list(dict.fromkeys(r.subject for r in every))
    head = demo._head_image(demo.LAYOUTS["samm"].head, colour=False)
    background = demo._background(render, np.random.default_rng([config.seed, 0]))
    subjects: dict[str, demo._Subject] = {}
    truth_clips = []
    total, done = 2 * len(rows), 0
    for row in rows:
        index = subjects_in_order.index(row.subject)
        if row.subject not in subjects:
            made = demo._make_subject(index, render, head, np.random.default_rng([config.seed, 1, index]))
            subjects[row.subject] = dataclasses.replace(made, id=row.subject, padding=PADDING)
        subject = subjects[row.subject]
        rng = np.random.default_rng([config.seed, 2, every.index(row)])
        motion = MOTION_OF.get(row.emotion, "brows_down_smile")
        bumps = demo._bumps(subject, demo.MOTIONS[motion]["bumps"], config.amplitude)
        ys, xs = np.mgrid[0:subject.shape[0], 0:subject.shape[1]].astype(np.float32)
        field = demo.displacement_field(bumps, xs + subject.origin[0], ys + subject.origin[1])
        folder = root / row.subject / row.clip
        folder.mkdir(parents=True, exist_ok=True)
        numbers = list(dict.fromkeys((row.onset, row.apex)))
        jitter = demo._jitter_track(len(numbers), config.jitter, rng, "uniform")
        frames_truth = []
        for (jx, jy), number in zip(jitter, numbers):
            amount = 1.0 if number == row.apex else 0.0  # the onset: no motion yet; the apex: all of it
            image = demo._render(background, subject, field * amount, (jx, jy), config.noise, rng)
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
            if not ok:  # pragma: no cover - a uint8 grey image always encodes
                raise RuntimeError(f"cannot encode frame {number} of {row.clip}")
            (folder / f"{row.subject}_{number:0{PADDING}d}.jpg").write_bytes(encoded.tobytes())
            frames_truth.append({"frame": number, "jitter": [round(float(jx), 4), round(float(jy), 4)], "motion": amount})
            done += 1
            if progress:
                progress(done, total, row.clip)
        truth_clips.append({"subject": row.subject, "clip": row.clip, "onset": row.onset, "apex": row.apex, "offset": row.offset,
                            "motion": motion, "valid": row.valid, "bumps": bumps,
                            "face_box": [round(v, 2) for v in subject.face_box()], "frames": frames_truth})
    truth = {
        "description": "sammflow SAMM-scale benchmark set (bench/samm_scale.py): the rows of a real annotation file, each "
                       "clip's onset and apex frames rendered by sammflow.demo. Frame px, +x right, +y down; see "
                       "sammflow/demo.py's ground truth for the meaning of jitter, motion and bumps.",
        "config": config.as_dict(), "config_hash": config.hash, "frame_size": [demo.FRAME_WIDTH, demo.FRAME_HEIGHT],
        "rows": len(rows), "valid_clips": sum(r.valid for r in rows), "subjects": len(subjects), "clips": truth_clips,
    }
    (root / demo.GROUND_TRUTH).write_text(json.dumps(truth, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=None, help="keep the first CLIPS rows (and the impossible ones)")
    parser.add_argument("--out", type=Path, default=None, help="folder (default: bench/data/samm-scale-<hash>)")
    args = parser.parse_args(argv)
    config = SammScaleConfig(clips=args.clips)
    start = time.perf_counter()
    root = generate_samm_scale(args.out, config, progress=lambda d, t, c: print(f"\r{d}/{t} {c}   ", end="", file=sys.stderr, flush=True))
    truth = json.loads((root / demo.GROUND_TRUTH).read_text())
    print(f"\n{root}: {truth['rows']} rows, {truth['valid_clips']} valid clips, {truth['subjects']} subjects "
          f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
