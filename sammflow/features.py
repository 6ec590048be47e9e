"""Model-ready arrays: ``OUT/features.npz``, the input of STSTNet, HTNet and OFF-ApexNet.

``export --arrays`` writes each clip's u, v and optical strain at the map size beside its
map (``OUT/arrays/sub{S}_{C}.npy``, float32 (3, S, S), written atomically by the worker
that computed the flow), and at the end of the job gathers those of the clips that
succeeded, in manifest order, into one ``features.npz`` that numpy opens with its defaults
(``allow_pickle=False``: strings are fixed-width unicode arrays, never objects):

=================  ======================  ===========================================================
key                dtype, shape            what
=================  ======================  ===========================================================
``u``, ``v``       float32 (N, S, S)       horizontal (+x right) and vertical (+y down) displacement,
                                           aligned-crop px, area-averaged to S × S
``strain``         float32 (N, S, S)       optical strain (``sammflow.flow.optical_strain``), computed at
                                           crop resolution, then area-averaged
``X``              float32 (N, S, S, 3)    (u, v, strain), each map min-max normalised to [0, 1] on its
                                           own: the STSTNet / HTNet input (OFF-ApexNet: ``X[..., :2]``)
``subject``        <U (N,)                 subject id
``clip``           <U (N,)                 clip id
``dataset``        <U (N,)                 dataset kind (``samm``)
``emotion``        <U (N,)                 the annotation's estimated emotion
``label_megc``     int64 (N,)              MEGC2019 class: 0 negative, 1 positive, 2 surprise, −1 not in MEGC2019
``objective_class``  <U (N,)               the annotation's objective class
``action_units``   <U (N,)                 parsed action units, space-separated (``sammflow.labels``)
``fold``           int64 (N,)              leave-one-subject-out fold: the subject's index among the
                                           sorted subjects of the job's valid clips (a subject whose
                                           clips all failed leaves its number unused)
``onset``, ``apex``, ``offset``  int64 (N,)   frame numbers used (``apex`` spotted or fixed where
                                           ``apex_source`` says so)
``apex_source``    <U (N,)                 ``annotated``, ``fixed`` or ``spotted``
``params``         <U () (0-d)             JSON of every parameter, the preset and the params hash
=================  ======================  ===========================================================
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sammflow.encode import normalise_channels
from sammflow.files import write_atomic
from sammflow.kinds import output_stem
from sammflow.params import PipelineParams

#: The gathered file, at the top of the output folder.
FEATURES_FILE = "features.npz"
#: Where each clip's (3, S, S) u, v, strain array is kept until gathered.
ARRAYS_DIR = "arrays"
#: The keys of ``features.npz``, in order.
KEYS = ("u", "v", "strain", "X", "subject", "clip", "dataset", "emotion", "label_megc", "objective_class", "action_units", "fold",
        "onset", "apex", "offset", "apex_source", "params")
_TEXT = ("subject", "clip", "dataset", "emotion", "objective_class", "action_units", "apex_source")
_INTEGER = ("label_megc", "fold", "onset", "apex", "offset")


def array_name(subject: str, clip: str, dataset: str = "samm") -> str:
    """A clip's array file, relative to the output folder: ``arrays/<its output stem>.npy``
    (``arrays/sub{S}_{C}.npy`` for SAMM; ``sammflow.kinds.output_stem``)."""
    return f"{ARRAYS_DIR}/{output_stem(dataset, subject, clip)}.npy"


def encode_npy(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (for ``write_atomic``)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def gather(out: Path, rows: Sequence[dict[str, Any]], params: PipelineParams) -> int:
    """Write ``out/features.npz`` from the arrays of the ``ok`` rows (manifest order).

    Returns
    -------
    int
        The number of clips in it.

    Raises
    ------
    ValueError
        An ``ok`` row whose array file is missing or not a (3, S, S) float32 array.
    """
    size = params.encode.size
    chosen = [r for r in rows if r.get("status") == "ok"]
    channels = np.zeros((len(chosen), 3, size, size), np.float32)
    for i, row in enumerate(chosen):
        path = out / array_name(str(row["subject"]), str(row["clip"]), str(row.get("dataset") or "samm"))
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{row['clip']}: cannot read its arrays {path} ({exc})") from exc
        if array.shape != (3, size, size) or array.dtype != np.float32:
            raise ValueError(f"{row['clip']}: {path} holds {array.dtype} {array.shape}, expected float32 (3, {size}, {size})")
        channels[i] = array
    content: dict[str, np.ndarray] = {
        "u": channels[:, 0], "v": channels[:, 1], "strain": channels[:, 2],
        "X": np.stack([normalise_channels(c) for c in channels]) if chosen else np.zeros((0, size, size, 3), np.float32),
    }
    for key in _TEXT:
        content[key] = np.array([str(r.get("aus" if key == "action_units" else key, "")) for r in chosen], dtype=str)
    for key in _INTEGER:
        content[key] = np.array([_integer(r.get(key)) for r in chosen], dtype=np.int64)
    record = {"preset": params.preset, "params_hash": params.hash, "params": params.to_dict(),
              "preset_changes": params.preset_changes()}
    content["params"] = np.array(json.dumps(record, sort_keys=True))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{key: content[key] for key in KEYS})
    write_atomic(out / FEATURES_FILE, buffer.getvalue())
    return len(chosen)


def _integer(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def load_features(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of a ``features.npz`` (opened with numpy's defaults), by key."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files}
