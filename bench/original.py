"""The original scripts' normalization, as a baseline to measure against (single process).

PIL decode + colour conversion of every frame, MTCNN at full resolution on the apex frame,
whole-pixel template matching (TM_CCOEFF_NORMED, ±40 px) at full resolution, crop resized
to 224×224 and written as PNG. Usage: ``python bench/original.py DATA OUT``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

START = time.perf_counter()

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sammflow.annotations import read_annotations  # noqa: E402
from sammflow.dataset import load_dataset  # noqa: E402


def main(data: Path, out: Path) -> None:
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=False)
    dataset = load_dataset(data, read_annotations(data / "samm.csv"))
    frames_done = 0
    for clip, frames in dataset.ready():
        apex_rgb = np.array(Image.open(frames.path(clip.apex)).convert("RGB"))
        boxes, _ = mtcnn.detect(apex_rgb)
        x1, y1, x2, y2 = (int(round(v)) for v in np.asarray(boxes, dtype=float)[0])
        apex = cv2.cvtColor(apex_rgb, cv2.COLOR_RGB2GRAY)
        template = apex[y1:y2, x1:x2]
        folder = out / clip.subject / clip.clip
        folder.mkdir(parents=True, exist_ok=True)
        for number, path in sorted(frames.frames.items()):
            grey = cv2.cvtColor(np.array(Image.open(path).convert("RGB")), cv2.COLOR_RGB2GRAY)
            sx, sy = max(0, x1 - 40), max(0, y1 - 40)
            window = grey[sy:y2 + 40, sx:x2 + 40]
            _, _, _, (mx, my) = cv2.minMaxLoc(cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED))
            crop = grey[sy + my:sy + my + (y2 - y1), sx + mx:sx + mx + (x2 - x1)]
            cv2.imwrite(str(folder / f"{path.stem}.png"), cv2.resize(crop, (224, 224)))
            frames_done += 1
    print(f"original: {frames_done} frames in {time.perf_counter() - START:.2f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
