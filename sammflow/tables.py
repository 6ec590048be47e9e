"""Tables and clip lists of the dashboard, as plain functions over a ``Dataset`` (no Streamlit).

The overview's annotation, problem and label tables and counts (a composite's per dataset
too), the clip filters and samples of the flow page, the grid's clips, captions (how a clip's
apex was chosen), the summary of an exported ``features.npz``: ``sammflow.ui``'s pages call
these, and a notebook can too. Every dataset kind reads the same: a clip's own kind
(``ClipAnnotation.dataset``) picks its MEGC2019 mapping, so a composite's clips are each
labelled by their dataset's table.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sammflow.annotations import ClipAnnotation
from sammflow.cache import clip_of
from sammflow.dataset import Dataset
from sammflow.kinds import KINDS
from sammflow.labels import MEGC2019_CLASSES, NOT_IN_MEGC2019, megc_label


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
        invalid annotation), note (the causes). A kind whose annotations give no apex (SMIC)
        has no apex nor latency (``None``): its clips' apexes are spotted.
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
        apex = ann.apex if KINDS[ann.dataset].has_apex else None  # else the middle frame, a reference until spotted
        rows.append({
            "subject": ann.subject, "clip": ann.clip, "onset": ann.onset, "apex": apex, "offset": ann.offset,
            "duration": ann.offset - ann.onset + 1, "latency": None if apex is None else apex - ann.onset, "AUs": ann.action_units,
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


#: The overview's name of the MEGC2019 label of an emotion outside the benchmark (label −1).
NOT_IN_MEGC = "not in MEGC"


def megc_class(dataset: Dataset | str, emotion: str) -> str:
    """The MEGC2019 class of an estimated emotion, by name.

    Parameters
    ----------
    dataset : Dataset or str
        Its kind (``"samm"``), or the kind itself, picks the mapping
        (``sammflow.labels.megc_label``); a composite's clips each have theirs (``ClipAnnotation.dataset``).
    emotion : str

    Returns
    -------
    str
        ``"negative"``, ``"positive"``, ``"surprise"`` or ``NOT_IN_MEGC``.
    """
    label = megc_label(dataset if isinstance(dataset, str) else dataset.kind, emotion or "")
    return NOT_IN_MEGC if label == NOT_IN_MEGC2019 else MEGC2019_CLASSES[label]


#: The MEGC2019 classes in the overview's order, then the clips outside them.
_CLASS_ORDER = (*MEGC2019_CLASSES, NOT_IN_MEGC)


def label_table(dataset: Dataset) -> Any:
    """Clips per estimated emotion, with each emotion's MEGC2019 class (valid annotation rows).

    Returns
    -------
    pandas.DataFrame
        Columns: emotion (``"—"`` for none), MEGC2019 class, clips. One row per emotion, in
        class order (negative, positive, surprise, not in MEGC), then most clips first.
    """
    import pandas as pd

    order = {name: i for i, name in enumerate(_CLASS_ORDER)}
    counts = Counter((ann.emotion or "—", megc_class(ann.dataset, ann.emotion)) for ann in dataset.annotations.clips)
    rows = [{"emotion": emotion, "MEGC2019 class": name, "clips": n} for (emotion, name), n in counts.items()]
    rows.sort(key=lambda r: (order[r["MEGC2019 class"]], -r["clips"], r["emotion"]))
    return pd.DataFrame(rows, columns=["emotion", "MEGC2019 class", "clips"])


def megc_counts(dataset: Dataset) -> dict[str, int]:
    """Clips per MEGC2019 class (valid annotation rows).

    Returns
    -------
    dict of str → int
        ``negative``, ``positive``, ``surprise`` and ``NOT_IN_MEGC``, in that order, each
        present (0 where no clip has it).
    """
    counts = Counter(megc_class(ann.dataset, ann.emotion) for ann in dataset.annotations.clips)
    return {name: counts.get(name, 0) for name in _CLASS_ORDER}


def _by_kind(dataset: Dataset) -> dict[str, list[ClipAnnotation]]:
    """The valid clips of each kind, in the dataset's order of kinds (a composite's parts)."""
    clips: dict[str, list[ClipAnnotation]] = {part.kind: [] for part in dataset.parts}
    for ann in dataset.annotations.clips:
        clips.setdefault(ann.dataset, []).append(ann)
    return clips


def megc_by_dataset(dataset: Dataset) -> Any:
    """Clips per MEGC2019 class, one row per dataset kind: a composite's label distribution.

    Parameters
    ----------
    dataset : Dataset
        A composite (``sammflow.dataset.merge``), or one dataset (one row).

    Returns
    -------
    pandas.DataFrame
        Columns: dataset (its title, ``"CASME II"``), negative, positive, surprise,
        ``NOT_IN_MEGC``, clips (valid annotation rows); rows in the composite's order.
    """
    import pandas as pd

    rows = []
    for kind, clips in _by_kind(dataset).items():
        counts = Counter(megc_class(kind, ann.emotion) for ann in clips)
        rows.append({"dataset": KINDS[kind].title, **{name: counts.get(name, 0) for name in _CLASS_ORDER}, "clips": len(clips)})
    return pd.DataFrame(rows, columns=["dataset", *_CLASS_ORDER, "clips"])


def emotions_by_dataset(dataset: Dataset) -> Any:
    """Clips per estimated emotion of each dataset kind, with the emotion's MEGC2019 class.

    Each dataset names its emotions its own way (SAMM's "Anger", CASME II's "repression"), so
    an emotion is counted within its dataset.

    Returns
    -------
    pandas.DataFrame
        Columns: dataset (title), emotion (``"—"`` for none), MEGC2019 class, clips. Datasets
        in the composite's order; within each, classes in order, then most clips first.
    """
    import pandas as pd

    order = {name: i for i, name in enumerate(_CLASS_ORDER)}
    rows = []
    for kind, clips in _by_kind(dataset).items():
        counts = Counter(ann.emotion or "—" for ann in clips)
        found = [{"dataset": KINDS[kind].title, "emotion": emotion, "MEGC2019 class": megc_class(kind, "" if emotion == "—" else emotion),
                  "clips": n} for emotion, n in counts.items()]
        rows += sorted(found, key=lambda r: (order[r["MEGC2019 class"]], -r["clips"], r["emotion"]))
    return pd.DataFrame(rows, columns=["dataset", "emotion", "MEGC2019 class", "clips"])


def frame_rate(dataset: Dataset) -> float | None:
    """The frame rate of a dataset's clips (``Kind.fps``: SAMM 200, SMIC 100 …); ``None`` for a
    composite whose kinds differ."""
    rates = {KINDS[kind].fps for kind in dataset.kind.split("+") if kind in KINDS}
    return rates.pop() if len(rates) == 1 else None


def resolution_counts(dataset: Dataset) -> dict[str, int]:
    """What the annotation parameters (``AnnotationParams``) did to the clips.

    Returns
    -------
    dict of str → int
        ``fixed``: clips with a shipped fix applied (``ClipAnnotation.fixes``);
        ``fixed_apex``: of those, clips whose apex is the fix's (``apex_source == "fixed"``);
        ``to_spot``: clips whose apex is to be spotted (``ClipAnnotation.spot``).
    """
    clips = dataset.annotations.clips
    return {"fixed": sum(bool(c.fixes) for c in clips), "fixed_apex": sum(c.apex_source == "fixed" for c in clips),
            "to_spot": sum(c.spot for c in clips)}


def annotated_clip(dataset: Dataset, clip_id: str) -> ClipAnnotation | None:
    """A clip as the file annotates it, without the apex policy: its annotated apex (a shipped
    fix's where the fixes are applied).

    Parameters
    ----------
    dataset : Dataset
        Resolved with some ``AnnotationParams``; their ``fix`` is kept.
    clip_id : str

    Returns
    -------
    ClipAnnotation or None
        ``None`` when the row has no usable apex (missing or impossible, kept to be spotted by
        the policy ``auto`` or ``spot``; a kind without apexes, SMIC; CASME II's ``/``), or the
        clip is not a valid annotated clip. A composite's clip comes from its part, with its ids.
    """
    for part in dataset.parts:
        prefix = f"{part.kind}-"
        if clip_id.startswith(prefix):
            found = annotated_clip(part, clip_id[len(prefix):])
            return None if found is None else dataclasses.replace(found, subject=prefix + found.subject, clip=clip_id)
    if dataset.annotations.params.apex == "annotated":
        found = dataset.annotations.by_clip.get(clip_id)
    else:
        params = dataclasses.replace(dataset.annotations.params, apex="annotated")
        try:  # the same rows, read again without the policy (milliseconds)
            found = dataset.annotations.resolved(params).by_clip.get(clip_id)
        except ValueError:  # annotations built without their table
            return None
    return None if found is None or found.spot else found  # spot even as annotated: no apex in the file


def apex_note(dataset: Dataset, clip: ClipAnnotation) -> str:
    """How a clip's apex was chosen, for a caption.

    Parameters
    ----------
    dataset : Dataset
        The resolved dataset the clip comes from (its annotation parameters).
    clip : ClipAnnotation
        The clip as processed (``sammflow.cache.spotted_clip``: spotted where it was to be).

    Returns
    -------
    str
        ``"apex 4664"``; ``"apex 4664 (fixed)"`` for a shipped fix's apex; ``"apex spotted: 4665
        (annotated: 4664)"`` for a spotted one (``"annotated: none usable"`` when the file's
        apex was missing or impossible; ``", fixed"`` after a fixed one).
    """
    if clip.apex_source != "spotted":
        return f"apex {clip.apex}" + (" (fixed)" if clip.apex_source == "fixed" else "")
    annotated = annotated_clip(dataset, clip.clip)
    if annotated is None:
        return f"apex spotted: {clip.apex} (annotated: none usable)"
    return f"apex spotted: {clip.apex} (annotated: {annotated.apex}{', fixed' if annotated.apex_source == 'fixed' else ''})"


def features_summary(path: str | Path) -> str:
    """One line on an exported ``features.npz`` (``sammflow.features``): its shapes and labels.

    Parameters
    ----------
    path : str or Path
        Opened with numpy's defaults (``allow_pickle=False``).

    Returns
    -------
    str
        ``"features.npz: 4 clips × 28 × 28 (u, v, strain float32; X 4 × 28 × 28 × 3) · MEGC2019:
        1 negative, 1 positive, 1 surprise, 1 not in MEGC · 2 subject folds"``.

    Raises
    ------
    OSError, ValueError
        The file is missing or not such an archive.
    """
    with np.load(path) as data:
        u, x, labels, folds = data["u"], data["X"], data["label_megc"], data["fold"]
    n, height, width = u.shape
    classes = [f"{int(np.sum(labels == i))} {name}" for i, name in enumerate(MEGC2019_CLASSES)]
    classes.append(f"{int(np.sum(labels == NOT_IN_MEGC2019))} {NOT_IN_MEGC}")
    shape = " × ".join(str(d) for d in x.shape)
    return (f"{Path(path).name}: {n} clips × {height} × {width} (u, v, strain {u.dtype}; X {shape}) · MEGC2019: "
            f"{', '.join(classes)} · {len(set(folds.tolist()))} subject folds")


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


def frame_number(dataset: Dataset, clip_id: str, which: str, *, clip: ClipAnnotation | None = None) -> int:
    """A clip's frame of a given role.

    Parameters
    ----------
    dataset : Dataset
    clip_id : str
    which : {"first", "onset", "apex"}
        ``first`` is the first frame of the clip folder.
    clip : ClipAnnotation, optional
        The clip as processed, when not the dataset's annotation (its apex spotted).

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
    return frames.numbers[0] if which == "first" else getattr(clip or ann, which)


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
