"""Tables and clip lists of the dashboard, as plain functions over a ``Dataset`` (no Streamlit).

The overview's annotation and problem tables and counts, the clip filters and samples of
the flow page, the grid's clips, captions: ``sammflow.ui``'s pages call these, and a
notebook can too.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from sammflow.cache import clip_of
from sammflow.dataset import Dataset


def aus_of(text: str) -> list[int]:
    """Action-unit numbers in a SAMM AU string.

    Parameters
    ----------
    text : str
        e.g. ``"R14+4(+7)"``.

    Returns
    -------
    list of int
        Sorted, unique: ``[4, 7, 14]``.
    """
    return sorted({int(n) for n in re.findall(r"\d+", text or "")})


def annotation_table(dataset: Dataset) -> Any:
    """One row per annotation row (valid and rejected) with its status on disk.

    Returns
    -------
    pandas.DataFrame
        Columns: subject, clip, onset, apex, offset, duration, latency (frames), AUs,
        emotion, objective class, frames on disk, status (ready / missing frames / no folder /
        invalid annotation), note (the causes).
    """
    import pandas as pd

    rows = []
    issues: dict[str, list[Any]] = {}
    for issue in dataset.issues:
        issues.setdefault(issue.clip, []).append(issue)
    for ann in dataset.annotations.clips:
        frames = dataset.clips_on_disk.get(ann.clip)
        found = issues.get(ann.clip, [])
        missing = any(i.kind == "missing_frame" for i in found)
        status = "no folder" if frames is None else ("missing frames" if missing else "ready")
        rows.append({
            "subject": ann.subject, "clip": ann.clip, "onset": ann.onset, "apex": ann.apex, "offset": ann.offset,
            "duration": ann.offset - ann.onset + 1, "latency": ann.apex - ann.onset, "AUs": ann.action_units,
            "emotion": ann.emotion or "—", "objective class": ann.objective_class or "—",
            "frames on disk": len(frames.frames) if frames else 0, "status": status,
            "note": "; ".join(i.message.split(": ", 1)[-1] for i in found),
        })
    for rejected in dataset.annotations.rejected:
        values = rejected.values
        frames = dataset.clips_on_disk.get(rejected.clip)
        rows.append({
            "subject": rejected.subject, "clip": rejected.clip, "onset": None, "apex": None, "offset": None,
            "duration": None, "latency": None, "AUs": values.get("action_units", ""), "emotion": values.get("emotion") or "—",
            "objective class": values.get("objective_class") or "—", "frames on disk": len(frames.frames) if frames else 0,
            "status": "invalid annotation", "note": rejected.cause,
        })
    return pd.DataFrame(rows)


def filter_table(table: Any, filters: dict[str, Sequence[Any]]) -> Any:
    """Rows of a table whose value in each filtered column is one of the chosen values.

    Parameters
    ----------
    table : pandas.DataFrame
    filters : dict of column → chosen values
        An empty choice keeps every row.

    Returns
    -------
    pandas.DataFrame
    """
    mask = np.ones(len(table), dtype=bool)
    for column, chosen in filters.items():
        if chosen:
            mask &= table[column].isin(list(chosen)).to_numpy()
    return table[mask]


def problem_table(dataset: Dataset) -> Any:
    """Annotation problems and dataset issues, one row each, naming the clip.

    Returns
    -------
    pandas.DataFrame
        Columns: clip, where, severity, problem.
    """
    import pandas as pd

    rows = [{"clip": p.clip or "?", "where": f"annotation row {p.row}", "severity": p.severity, "problem": p.message}
            for p in dataset.annotations.problems]
    rows += [{"clip": i.clip, "where": i.kind.replace("_", " "), "severity": "warning" if i.kind == "no_annotation" else "error",
              "problem": i.message} for i in dataset.issues]
    return pd.DataFrame(rows, columns=["clip", "where", "severity", "problem"])


def summary(dataset: Dataset) -> dict[str, int]:
    """Counts for the overview's metrics.

    Parameters
    ----------
    dataset : Dataset

    Returns
    -------
    dict of str → int
        subjects, clips (valid rows), ready, folders, frames, missing_frames, problems, rejected.
    """
    return {
        "subjects": len({c.subject for c in dataset.annotations.clips}),
        "clips": len(dataset.annotations.clips),
        "ready": len(dataset.ready()),
        "folders": len(dataset.clips_on_disk),
        "frames": dataset.frame_count,
        "missing_frames": sum(i.kind == "missing_frame" for i in dataset.issues),
        "problems": len(dataset.annotations.problems) + len(dataset.issues),
        "rejected": len(dataset.annotations.rejected),
    }


def filter_clips(dataset: Dataset, subjects: Sequence[str] = (), emotions: Sequence[str] = (), aus: Sequence[int] = ()) -> list[str]:
    """Ready clips matching every non-empty filter.

    Parameters
    ----------
    dataset : Dataset
    subjects, emotions : sequence of str
    aus : sequence of int
        A clip matches if it has any of these action units.

    Returns
    -------
    list of str
        Clip ids, in annotation order.
    """
    out = []
    for ann, _ in dataset.ready():
        if subjects and ann.subject not in subjects:
            continue
        if emotions and (ann.emotion or "—") not in emotions:
            continue
        if aus and not set(aus) & set(aus_of(ann.action_units)):
            continue
        out.append(ann.clip)
    return out


def sample(clips: Sequence[str], seed: int, n: int = 9) -> list[str]:
    """Clips drawn at random, reproducibly.

    Parameters
    ----------
    clips : sequence of str
    seed : int
    n : int
        How many; all of them, shuffled, if there are fewer.

    Returns
    -------
    list of str
    """
    return random.Random(seed).sample(list(clips), min(n, len(clips)))


def caption(dataset: Dataset, clip_id: str) -> str:
    """Short caption of a clip.

    Parameters
    ----------
    dataset : Dataset
    clip_id : str

    Returns
    -------
    str
        ``"006_1_1 · Anger · AU 4"``.
    """
    ann = dataset.annotations.by_clip.get(clip_id)
    if ann is None:
        return clip_id
    parts = [clip_id, ann.emotion or None, f"AU {ann.action_units}" if ann.action_units else None]
    return " · ".join(p for p in parts if p)


def ready_ids(dataset: Dataset) -> list[str]:
    """Clips whose onset and apex frames are on disk, in annotation order."""
    return [ann.clip for ann, _ in dataset.ready()]


def grid_clips(dataset: Dataset, per: str) -> list[str]:
    """Clips of the normalized grid.

    Parameters
    ----------
    dataset : Dataset
    per : {"clip", "subject"}
        Every ready clip, or the first ready clip of each subject.

    Returns
    -------
    list of str
    """
    ready = ready_ids(dataset)
    if per == "clip":
        return ready
    first: dict[str, str] = {}
    for clip in ready:
        first.setdefault(dataset.annotations.by_clip[clip].subject, clip)
    return list(first.values())


def frame_number(dataset: Dataset, clip_id: str, which: str) -> int:
    """A clip's frame of a given role.

    Parameters
    ----------
    dataset : Dataset
    clip_id : str
    which : {"first", "onset", "apex"}
        ``first`` is the first frame of the clip folder.

    Returns
    -------
    int
        Absolute frame number.

    Raises
    ------
    ClipError
        ``clip_id`` is not a clip of the dataset with a folder.
    """
    ann, frames = clip_of(dataset, clip_id)
    return frames.numbers[0] if which == "first" else getattr(ann, which)


def _compare(value: float, sign: str, limit: float, unit: str = "") -> str:
    """``"0.71 < 0.80"``: at least 2 decimals, as many as the limit has (``0.999``), and more (up to
    4) where the two would read the same."""
    exact = len(f"{limit:.4f}".rstrip("0").partition(".")[2])
    for decimals in range(max(2, exact), 5):
        shown, bound = f"{value:.{decimals}f}", f"{limit:.{decimals}f}"
        if shown != bound:
            break
    return f"{shown} {sign} {bound}{unit}"


def flag_reasons(alignment: Any, params: Any) -> list[tuple[int, str]]:
    """Each flagged frame of an alignment with the limit it broke, in words.

    Parameters
    ----------
    alignment : sammflow.align.Alignment
        Per-frame scores and residuals.
    params : sammflow.params.AlignParams
        ``min_score`` and ``max_residual``, the limits.

    Returns
    -------
    list of (int, str)
        Frame number and ``"score 0.71 < 0.80"``, ``"residual 0.31 > 0.20 px"`` or both,
        joined by ``", "``; in frame order, flagged frames only (``Alignment.flagged``).
    """
    out = []
    for frame, score, residual in zip(alignment.frames, alignment.scores, alignment.residuals):
        broken = []
        if score < params.min_score:
            broken.append(f"score {_compare(float(score), '<', params.min_score)}")
        if residual > params.max_residual:
            broken.append(f"residual {_compare(float(residual), '>', params.max_residual, ' px')}")
        if broken:
            out.append((int(frame), ", ".join(broken)))
    return out
