"""Manifest rows and the resume plan, as plain functions over rows (no files, no folders).

``manifest.csv`` has one row per annotated clip (``MANIFEST_COLUMNS``); per-frame alignment
records (``ALIGNMENT_COLUMNS``) are kept beside it. A clip's quality verdict
(``align_trusted``, ``flagged_frames``) is not stored with its outputs but *judged* from its
per-frame records with the thresholds in force (``judge``), so changing a threshold
re-judges every clip without recomputing any.

``plan`` decides, from an output folder's earlier ``params.json`` and manifest, which clips
are kept, which are computed, and whether the folder must be refused or replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sammflow.annotations import Annotations, ClipAnnotation, RejectedRow
from sammflow.detect import FaceBox
from sammflow.labels import megc_label, parse_action_units
from sammflow.params import AlignParams, PipelineParams
from sammflow.pipeline import NormalizedClip
from sammflow.text import one_line

#: Columns of ``manifest.csv``, one row per annotated clip.
MANIFEST_COLUMNS = [
    "subject", "clip", "onset", "apex", "offset", "action_units", "emotion", "objective_class",
    "dataset", "apex_source", "fixes", "aus", "label_megc", "fold",
    "x1", "y1", "x2", "y2", "face_prob", "face_frame", "match_score_min", "residual_max", "align_trusted",
    "flagged_frames", "frames", "output", "status", "error", "warnings",
]
#: Manifest statuses: done, failed (``error`` says why), rejected annotation row, not done yet
#: (the run is going on, or was interrupted: re-run to resume).
STATUSES = ("ok", "failed", "invalid_annotation", "pending")
#: Per-frame alignment records (``alignment.csv``; the top-level one has a ``clip`` column first).
ALIGNMENT_COLUMNS = ["frame", "dx", "dy", "score", "residual", "angle", "scale"]
#: Row key of a clip's per-frame records (never a manifest column).
RECORDS = "_records"
_ANNOTATED = ("onset", "apex", "offset", "action_units", "emotion", "objective_class")
#: Columns that follow the annotation file when a finished clip is kept (they describe, not make, its outputs).
_DESCRIPTIVE = ("action_units", "emotion", "objective_class", "dataset", "fixes", "aus", "label_megc")


def label_fields(clip: ClipAnnotation | RejectedRow, dataset: str = "samm") -> dict[str, Any]:
    """The label columns of a clip's row: ``dataset``, ``aus`` (parsed action units,
    space-separated), ``label_megc`` (0 negative, 1 positive, 2 surprise, −1 not in MEGC2019)
    and, for a valid clip, ``apex_source`` and ``fixes``. ``fold`` is the job's (``fold_of``)."""
    values = clip.values if isinstance(clip, RejectedRow) else clip.__dict__
    fields = {"dataset": dataset, "aus": " ".join(parse_action_units(str(values.get("action_units", "")))),
              "label_megc": megc_label(dataset, str(values.get("emotion", "")))}
    if isinstance(clip, ClipAnnotation):
        fields.update(apex_source=clip.apex_source, fixes=one_line("; ".join(clip.fixes)))
    return fields


def clip_row(clip: ClipAnnotation | RejectedRow, status: str, error: str = "") -> dict[str, Any]:
    """A clip's manifest row with its annotation and label columns, status and error."""
    if isinstance(clip, RejectedRow):
        error = f"{clip.clip or '?'} (annotation row {clip.row}): {error}"
        base = {k: clip.values.get(k, "") for k in _ANNOTATED}
    else:
        base = {k: getattr(clip, k) for k in _ANNOTATED}
    return {"subject": clip.subject, "clip": clip.clip, **base, **label_fields(clip, clip.dataset), "status": status,
            "error": one_line(error)}


def box_fields(box: FaceBox) -> dict[str, Any]:
    """Manifest columns of the apex face box."""
    return {"x1": box.x1, "y1": box.y1, "x2": box.x2, "y2": box.y2, "face_prob": round(box.prob, 4), "face_frame": box.frame}


def alignment_fields(normalized: NormalizedClip, warnings: Sequence[str]) -> dict[str, Any]:
    """Manifest columns of a clip's alignment: its box, worst frame, warnings, and its per-frame
    records (``RECORDS``) for ``judge``."""
    alignment = normalized.alignment
    return {
        **box_fields(alignment.box),
        "match_score_min": round(alignment.min_score, 4),
        "residual_max": round(alignment.max_residual, 4),
        "frames": len(alignment.frames),
        "warnings": one_line(" | ".join([*warnings, *normalized.warnings])),
        RECORDS: alignment.to_records(),
    }


def judge(records: Sequence[dict[str, Any]], params: AlignParams) -> dict[str, str]:
    """The quality verdict of a clip from its per-frame records (as written to ``alignment.csv``).

    Parameters
    ----------
    records : sequence of dict
        ``frame``, ``score`` and ``residual`` of each aligned frame (numbers or their text).
    params : AlignParams
        ``min_score`` and ``max_residual``.

    Returns
    -------
    dict
        ``align_trusted`` (``"yes"`` / ``"no"``) and ``flagged_frames`` (space-separated numbers).
    """
    flagged = [str(int(r["frame"])) for r in records
               if float(r["score"]) < params.min_score or float(r["residual"]) > params.max_residual]
    return {"align_trusted": "no" if flagged else "yes", "flagged_frames": " ".join(flagged)}


def annotated_in_order(annotations: Annotations) -> list[ClipAnnotation | RejectedRow]:
    """Valid and rejected annotation rows, in the annotation file's order (a composite's: by
    dataset in its order, then each file's)."""
    kinds = annotations.dataset.split("+")
    return sorted([*annotations.clips, *annotations.rejected], key=lambda c: (kinds.index(c.dataset) if c.dataset in kinds else 0, c.row))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _input_of(content: dict[str, Any]) -> str:
    return str(content.get("normalized") or content.get("dataset") or "")


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, RuntimeError):
        return a == b


#: Every parameter's default, as ``params.<stage>.<name>``: what an older params.json that lacks
#: a parameter (added to sammflow since) made its outputs with.
_DEFAULTS = _flatten({"params": PipelineParams().to_dict()})


def differences(old: dict[str, Any], new: dict[str, Any], *, unhashed: Sequence[str] = ()) -> list[str]:
    """What makes ``old`` (a params.json) and ``new`` describe different outputs, in words.

    A parameter ``new`` has and ``old`` lacks counts as its default in ``old``: parameters
    added to sammflow later (a flow method, the map's channels) default to what it did before.
    A parameter ``old`` lists that has no effect with ``new``'s values is not compared.

    Parameters
    ----------
    old, new : dict
        ``params`` (by stage), ``gif``, and the input folder (``dataset`` / ``normalized``).
    unhashed : sequence of str
        ``stage.name`` of parameters that do not change outputs: an older params.json that
        still lists them among its ``params`` is not "other parameters" for that.
    """
    found = []
    a = {k: v for k, v in _flatten({"params": old.get("params") or {}, "gif": old.get("gif") or {}}).items()
         if k.removeprefix("params.") not in unhashed}
    b = _flatten({"params": new.get("params") or {}, "gif": new.get("gif") or {}})
    if old.get("params"):
        # a parameter new lacks but sammflow knows has no effect with new's values (a Farnebäck
        # parameter under TV-L1: a difference in what gives it effect is named itself)
        a = {k: v for k, v in a.items() if k in b or k not in _DEFAULTS}
        a = {**{k: _DEFAULTS[k] for k in b if k not in a and k in _DEFAULTS}, **a}
    changed = [f"{k.removeprefix('params.')} {a.get(k, '-')} → {b.get(k, '-')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if changed:
        found.append(f"made with other parameters ({', '.join(changed[:4])}" + (f", +{len(changed) - 4} more" if len(changed) > 4 else "") + ")")
    if not _same_path(_input_of(old), _input_of(new)):
        found.append(f"made from {_input_of(old)}, not {_input_of(new)}")
    return found


@dataclass
class Plan:
    """What a job does in a folder.

    Attributes
    ----------
    rows : list of dict
        The manifest rows in order: kept ones as they were, clips to do ``pending``.
    todo : list of (int, ClipAnnotation)
        Index into ``rows`` and clip, of every clip to compute.
    resumed : int
        Clips kept from the earlier run.
    replace : list of str
        Why the earlier outputs must go first (empty: nothing to remove).
    created : str or None
        When the kept outputs were first started.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    todo: list[tuple[int, ClipAnnotation]] = field(default_factory=list)
    resumed: int = 0
    replace: list[str] = field(default_factory=list)
    created: str | None = None


class Refused(ValueError):
    """The folder holds finished outputs of other parameters (or inputs), and ``force`` was not given."""


def plan(
    items: Sequence[ClipAnnotation | RejectedRow],
    order: Sequence[ClipAnnotation | RejectedRow],
    old_params: dict[str, Any] | None,
    old_rows: Sequence[dict[str, str]],
    new: dict[str, Any],
    *,
    force: bool,
    resumable: Callable[[ClipAnnotation, dict[str, str]], bool],
    unhashed: Sequence[str] = (),
) -> Plan:
    """The resume plan of a job.

    Parameters
    ----------
    items : sequence
        The annotation rows this job does.
    order : sequence
        The manifest's order: ``items``, or every annotation row when rows of other clips made
        earlier are kept (a GIF subset).
    old_params : dict or None
        The folder's params.json (``None``: none there).
    old_rows : sequence of dict
        The folder's manifest rows.
    new : dict
        This job's ``params`` / ``gif`` / input, as in params.json.
    force : bool
        Recompute every clip; replace outputs of other parameters instead of refusing.
    resumable : callable(clip, old row) -> bool
        Whether an ``ok`` row can be kept (same annotation, outputs there).

    Raises
    ------
    Refused
        Finished outputs of other parameters or inputs, without ``force``.
    """
    made = [r for r in old_rows if r.get("status") == "ok"]
    if old_params is None:
        why = ["has outputs but no params.json, so their parameters are unknown"] if made else []
    else:
        why = differences(old_params, new, unhashed=unhashed)
    if why and made and not force:  # nothing finished there (say, a typo'd option): nothing to protect
        raise Refused(f"{'; '.join(why)}; use a new output folder, or --force to replace its outputs")
    result = Plan(replace=why)
    carried: dict[str, dict[str, str]] = {}
    if not why:
        result.created = (old_params or {}).get("created")
        carried = {r["clip"]: r for r in made}
    selected = {item.clip for item in items}
    for item in order:
        old = carried.get(item.clip)
        if item.clip not in selected:  # a clip outside a GIF subset: kept if an earlier run made it
            if isinstance(item, ClipAnnotation) and old and resumable(item, old):
                result.rows.append(_carry(item, old))
            continue
        if isinstance(item, RejectedRow):
            result.rows.append(clip_row(item, "invalid_annotation", item.cause))
        elif not force and old and resumable(item, old):
            result.rows.append(_carry(item, old))
            result.resumed += 1
        else:
            result.todo.append((len(result.rows), item))
            result.rows.append(clip_row(item, "pending"))
    return result


def same_annotation(clip: ClipAnnotation, old: dict[str, str]) -> bool:
    """Whether a manifest row was made for this clip's subject, onset, apex and offset (for a
    clip whose apex is to be spotted: onset and offset, and a row whose apex was spotted)."""
    if old.get("subject") != clip.subject or old.get("apex_source", "annotated") != ("spotted" if clip.spot else clip.apex_source):
        return False
    return all(old.get(k) == str(getattr(clip, k)) for k in (("onset", "offset") if clip.spot else ("onset", "apex", "offset")))


def _carry(clip: ClipAnnotation, old: dict[str, str]) -> dict[str, Any]:
    # descriptive columns follow the (possibly edited) annotation; the rest describes the outputs
    described = clip_row(clip, "ok")
    return {**old, **{k: str(described[k]) for k in _DESCRIPTIVE}}  # as read back from manifest.csv
