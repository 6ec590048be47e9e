"""Recognition check: does this preprocessing help a model? Leave-one-subject-out baselines on a ``features.npz``.

A researcher tuning alignment, flow and map parameters needs an objective that cannot leak.
This module trains a small baseline with **leave-one-subject-out** (LOSO) folds, the ``fold``
column of ``features.npz`` (``sammflow.features``): for each held-out fold a fresh model,
initialised from a seed derived from (``seed``, fold) alone, is trained for a fixed number of
epochs on the other folds' clips only, then predicts the held-out clips. There is no early
stopping, no validation split, no epoch or model selection: nothing of a test fold reaches
training (``train_fold`` receives only the training folds' arrays; ``tests/test_evaluate.py``
poisons a test fold and checks the trained model is bit-identical).

Models (``MODELS``):

============  =====================  ===============================================================
name          input                  what
============  =====================  ===============================================================
logreg        X flattened (S·S·3)    scikit-learn ``LogisticRegression`` (lbfgs, ``class_weight=
                                     "balanced"``), on features standardised by a ``StandardScaler``
                                     fitted on the training folds only
offapexnet    X[..., :2] (u, v)      OFF-ApexNet (Gan, Liong et al., Signal Processing: Image
                                     Communication 74, 2019): conv 3×3 ×6, pool, conv 3×3 ×16, pool,
                                     FC 1024, FC classes, dropout 0.5 (as tvaranka/meb's ``OffApexNet``)
ststnet       X (u, v, strain)       STSTNet (Liong et al., IEEE FG 2019): three parallel conv 3×3
                                     streams of 3, 5 and 8 channels (padding 2, ReLU, batch norm,
                                     max-pool 3/3, dropout 0.5), concatenated, avg-pool 2, FC classes
============  =====================  ===============================================================

The CNNs train with Adam and class-balanced cross-entropy, on CPU, one thread
(``torch.set_num_threads(1)``, ``torch.use_deterministic_algorithms(True)``): the same seed
gives the same weights and predictions, bit for bit, on any machine with the same torch.
torch is imported only when a CNN is trained, so importing this module stays light.

Metrics, on the predictions of all folds pooled (scikit-learn): **UF1**, the mean over classes
of 2TP / (2TP + FP + FN), and **UAR**, the mean per-class recall, each over the classes present
in the clips scored (MEGC2019's convention, per dataset of a composite and overall); the
confusion matrix; per-subject accuracy; and a 95 % bootstrap interval over subjects (subjects
drawn with replacement, their pooled predictions scored again; ``BOOTSTRAP_RESAMPLES``, fixed
seed). ``write_evaluation`` writes it all as ``evaluation.json`` beside the features file.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from sammflow import __version__
from sammflow.features import FEATURES_FILE
from sammflow.files import write_atomic
from sammflow.labels import MEGC2019_CLASSES

#: The file ``write_evaluation`` writes beside the features file: the latest run, whatever its model.
EVALUATION_FILE = "evaluation.json"
#: Labels to train on: the MEGC2019 classes (``label_megc``), or the dataset's own emotions.
LABEL_SOURCES = ("megc", "emotion")
#: Subjects resampled for the bootstrap interval, and its seed (fixed: the interval is reproducible).
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
#: Default seed of the models' initialisation, shuffling and dropout.
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Model:
    """A baseline and its fixed training settings (no selection on a test fold: these never change per fold).

    Attributes
    ----------
    name, title : str
    channels : tuple of int
        Which channels of ``X`` (0 u, 1 v, 2 strain) the model reads.
    epochs : int
        Passes over the training folds (CNNs); ``max_iter`` of the solver (logreg).
    lr, weight_decay : float
        Adam's (CNNs); for logreg ``lr`` is unused and ``weight_decay`` is unused too (its ``C`` is 1).
    batch_size : int
    reference : str
    """

    name: str
    title: str
    channels: tuple[int, ...]
    epochs: int
    lr: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 0
    reference: str = ""

    def settings(self) -> dict[str, Any]:
        return asdict(self)


MODELS: dict[str, Model] = {
    "logreg": Model("logreg", "Logistic regression", (0, 1, 2), epochs=2000,
                    reference="scikit-learn LogisticRegression(C=1, lbfgs, class_weight='balanced') on standardised X"),
    "offapexnet": Model("offapexnet", "OFF-ApexNet", (0, 1), epochs=30, lr=1e-3, weight_decay=1e-3, batch_size=32,
                        reference="Gan, Liong et al., OFF-ApexNet on micro-expression recognition system, "
                                  "Signal Processing: Image Communication 74 (2019); layers as tvaranka/meb OffApexNet"),
    "ststnet": Model("ststnet", "STSTNet", (0, 1, 2), epochs=40, lr=1e-3, weight_decay=1e-3, batch_size=32,
                     reference="Liong et al., Shallow Triple Stream Three-dimensional CNN (STSTNet) for micro-expression "
                               "recognition, IEEE FG 2019; layers as the authors' code and tvaranka/meb STSTNet"),
}
#: The model of ``sammflow evaluate`` without ``--model``: the fastest, and the same on any machine.
DEFAULT_MODEL = "logreg"


class EvaluationError(ValueError):
    """A features file that cannot be evaluated; the message names the file and the cause."""


# ---------------------------------------------------------------- the labelled clips


@dataclass(frozen=True)
class LabelledSet:
    """The clips of a features file that have a label, with what LOSO needs.

    Attributes
    ----------
    X : ndarray, float32, (N, S, S, 3)
        u, v, strain, each map min-max normalised (``features.npz``'s ``X``).
    y : ndarray, int64, (N,)
        Class index into ``classes``.
    subject, clip, dataset : ndarray of str, (N,)
    fold : ndarray, int64, (N,)
        Leave-one-subject-out fold.
    classes : tuple of str
    params : dict
        The features file's ``params`` record (parameters, preset, params hash).
    source : Path
    total : int
        Clips in the file, labelled or not.
    """

    X: np.ndarray
    y: np.ndarray
    subject: np.ndarray
    clip: np.ndarray
    dataset: np.ndarray
    fold: np.ndarray
    classes: tuple[str, ...]
    params: dict[str, Any]
    source: Path
    total: int

    @property
    def folds(self) -> list[int]:
        return sorted(int(f) for f in np.unique(self.fold))

    def with_labels(self, y: np.ndarray) -> LabelledSet:
        """The same clips with other labels (tests: labels shuffled or poisoned)."""
        return LabelledSet(self.X, np.asarray(y, np.int64), self.subject, self.clip, self.dataset, self.fold, self.classes,
                           self.params, self.source, self.total)


_NEEDED = ("X", "subject", "clip", "dataset", "fold", "label_megc", "emotion", "params")


def load_labelled(path: str | Path, *, labels: str = "megc") -> LabelledSet:
    """The labelled clips of ``path`` (a ``features.npz``), opened with ``allow_pickle=False``.

    ``path`` may be the output folder that holds it. ``labels="megc"`` keeps the clips with a MEGC2019 class (``label_megc`` ≥ 0); ``"emotion"``
    keeps every clip, labelled by its annotated emotion (lower case, classes sorted).

    Raises
    ------
    FileNotFoundError
        No such file.
    EvaluationError
        Not a features file, or nothing LOSO can be run on: no labelled clip, fewer than two
        subjects (folds) or two classes. The message names the file and the cause.
    """
    path = Path(path)
    if labels not in LABEL_SOURCES:
        raise EvaluationError(f"--labels must be one of {list(LABEL_SOURCES)}, got {labels!r}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (a features.npz from 'sammflow export --arrays')")
    if path.is_dir():
        if not (path / FEATURES_FILE).is_file():
            raise EvaluationError(f"{path}: a folder without a {FEATURES_FILE}; give a features.npz (written by 'sammflow export --arrays')")
        path = path / FEATURES_FILE
    if not zipfile.is_zipfile(path):  # numpy would try it as a pickle
        raise EvaluationError(f"{path}: not a features.npz (not a zip archive; 'sammflow export --arrays' writes one)")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in _NEEDED if key not in data.files]
            if missing:
                raise EvaluationError(f"{path}: not a sammflow features.npz (no {', '.join(missing)})")
            content = {key: data[key] for key in _NEEDED}
    except EvaluationError:
        raise
    except (OSError, ValueError, EOFError) as exc:  # not a zip, truncated, pickled objects
        raise EvaluationError(f"{path}: not a readable features.npz ({' '.join(str(exc).split()) or type(exc).__name__})") from None
    X = content["X"]
    n = len(X)
    if X.ndim != 4 or X.shape[3] != 3 or X.shape[1] != X.shape[2] or any(len(content[k]) != n for k in _NEEDED[1:-1]):
        raise EvaluationError(f"{path}: not a sammflow features.npz (X is {X.shape}, expected (N, S, S, 3) with N labels)")
    try:
        params = json.loads(str(content["params"]))
    except ValueError:
        params = {}
    if labels == "megc":
        keep = content["label_megc"] >= 0
        classes = MEGC2019_CLASSES
        y = content["label_megc"][keep]
        if not keep.any():
            raise EvaluationError(f"{path}: no clip with a MEGC2019 label (label_megc >= 0) among its {n} clips; "
                                  "--labels emotion uses the dataset's own emotions")
    else:
        emotion = np.char.lower(content["emotion"].astype(str))
        keep = emotion != ""
        classes = tuple(sorted(set(emotion[keep].tolist())))
        y = np.array([classes.index(e) for e in emotion[keep]], np.int64)
        if not keep.any():
            raise EvaluationError(f"{path}: no clip with an emotion among its {n} clips")
    fold = content["fold"][keep]
    if len(np.unique(fold)) < 2:
        raise EvaluationError(f"{path}: leave-one-subject-out needs at least 2 subjects (folds) with labelled clips, "
                              f"got {len(np.unique(fold))}")
    if len(np.unique(y)) < 2:
        raise EvaluationError(f"{path}: its {int(keep.sum())} labelled clips are all of one class "
                              f"({classes[int(y[0])]}); recognition needs at least 2")
    return LabelledSet(np.ascontiguousarray(X[keep], np.float32), y.astype(np.int64), content["subject"][keep].astype(str),
                       content["clip"][keep].astype(str), content["dataset"][keep].astype(str), fold.astype(np.int64),
                       tuple(classes), params, path, n)


# ---------------------------------------------------------------- training, one fold at a time


def fold_seed(seed: int, fold: int) -> int:
    """The seed of the model trained with ``fold`` held out: from (``seed``, ``fold``) only."""
    return int(np.random.SeedSequence([int(seed), int(fold)]).generate_state(1)[0])


@dataclass
class FoldResult:
    """One held-out fold: its clips' predictions, and what was trained without it.

    Attributes
    ----------
    fold, seed : int
    test : ndarray of int, indices of the held-out clips in the ``LabelledSet``
    predicted : ndarray, int64, predicted classes of those clips
    state : dict of str → ndarray
        The trained model's parameters (a CNN's ``state_dict`` as numpy arrays; logreg's
        ``coef``, ``intercept`` and the scaler's ``mean``, ``scale``).
    losses : list of float
        The mean training loss of each epoch (CNNs; empty for logreg).
    """

    fold: int
    seed: int
    test: np.ndarray
    predicted: np.ndarray
    state: dict[str, np.ndarray]
    losses: list[float] = field(default_factory=list)


def train_fold(data: LabelledSet, fold: int, model: str | Model = DEFAULT_MODEL, *, seed: int = DEFAULT_SEED,
               epochs: int | None = None) -> FoldResult:
    """Train ``model`` on every fold but ``fold`` and predict ``fold``'s clips.

    Only the training folds' inputs and labels are handed to the training code
    (``fit``); the held-out clips are seen once, by the trained model, to be predicted.
    """
    spec = _model(model, epochs)
    test = np.flatnonzero(data.fold == fold)
    train = np.flatnonzero(data.fold != fold)
    if len(test) == 0:
        raise ValueError(f"no clip in fold {fold}")
    s = fold_seed(seed, fold)
    predict, state, losses = fit(spec, data.X[train], data.y[train], len(data.classes), seed=s)
    return FoldResult(fold, s, test, predict(data.X[test]), state, losses)


def _model(model: str | Model, epochs: int | None = None) -> Model:
    if isinstance(model, str):
        if model not in MODELS:
            raise EvaluationError(f"--model must be one of {list(MODELS)}, got {model!r}")
        model = MODELS[model]
    if epochs is not None:
        if epochs < 1:
            raise EvaluationError(f"--epochs must be >= 1, got {epochs}")
        model = Model(**{**model.settings(), "epochs": int(epochs)})
    return model


Predictor = Callable[[np.ndarray], np.ndarray]


def fit(model: Model, X: np.ndarray, y: np.ndarray, n_classes: int, *, seed: int) -> tuple[Predictor, dict[str, np.ndarray], list[float]]:
    """Train ``model`` on ``X`` (N, S, S, 3) float32 and ``y`` (N,) int64: returns a predictor
    (X → classes), the trained parameters, and the per-epoch training losses."""
    if model.name == "logreg":
        return _fit_logreg(model, X, y, seed)
    return _fit_cnn(model, X, y, n_classes, seed)


def _fit_logreg(model: Model, X: np.ndarray, y: np.ndarray, seed: int) -> tuple[Predictor, dict[str, np.ndarray], list[float]]:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    flat = X[..., list(model.channels)].reshape(len(X), -1).astype(np.float64)
    scaler = StandardScaler().fit(flat)
    classifier = LogisticRegression(C=1.0, class_weight="balanced", max_iter=model.epochs, random_state=seed)
    with warnings.catch_warnings():  # a fixed budget is the point; not converging is not an error
        warnings.simplefilter("ignore", ConvergenceWarning)
        classifier.fit(scaler.transform(flat), y)

    def predict(inputs: np.ndarray) -> np.ndarray:
        return classifier.predict(scaler.transform(inputs[..., list(model.channels)].reshape(len(inputs), -1).astype(np.float64))).astype(np.int64)

    state = {"coef": classifier.coef_.copy(), "intercept": classifier.intercept_.copy(), "classes": classifier.classes_.copy(),
             "mean": scaler.mean_.copy(), "scale": scaler.scale_.copy()}
    return predict, state, []


def _networks() -> dict[str, Any]:
    """The CNNs' classes, defined on first use (torch is imported only here)."""
    import torch
    from torch import nn

    class OffApexNet(nn.Module):
        """OFF-ApexNet on 28×28×2 (u, v): two conv + max-pool stages, FC 1024, FC classes."""

        def __init__(self, num_classes: int, size: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(2, 6, kernel_size=3, padding=1)
            self.conv2 = nn.Conv2d(6, 16, kernel_size=3, padding=1)
            self.pool = nn.MaxPool2d(2, 2)
            self.fc1 = nn.Linear((size // 4) ** 2 * 16, 1024)
            self.fc = nn.Linear(1024, num_classes)
            self.drop, self.drop2 = nn.Dropout(0.5), nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pool(torch.relu(self.conv1(x)))
            x = self.pool(torch.relu(self.conv2(x)))
            x = torch.relu(self.fc1(self.drop(x.flatten(1))))
            return self.fc(self.drop2(x))

    class STSTNet(nn.Module):
        """STSTNet on 28×28×3 (u, v, strain): three shallow streams of 3, 5 and 8 channels."""

        def __init__(self, num_classes: int, size: int) -> None:
            super().__init__()
            self.streams = nn.ModuleList(
                nn.Sequential(nn.Conv2d(3, width, kernel_size=3, padding=2), nn.ReLU(), nn.BatchNorm2d(width),
                              nn.MaxPool2d(kernel_size=3, stride=3, padding=1), nn.Dropout(0.5))
                for width in (3, 5, 8))
            self.avgpool = nn.AvgPool2d(2, 2)
            pooled = ((size + 2 + 2 - 3) // 3 + 1) // 2  # 28 → conv 30 → max-pool 10 → avg-pool 5
            self.fc = nn.Linear(pooled * pooled * 16, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.cat([stream(x) for stream in self.streams], 1)
            return self.fc(self.avgpool(x).flatten(1))

    return {"offapexnet": OffApexNet, "ststnet": STSTNet}


def _fit_cnn(model: Model, X: np.ndarray, y: np.ndarray, n_classes: int, seed: int) -> tuple[Predictor, dict[str, np.ndarray], list[float]]:
    import torch

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)  # one thread: the same float sums in the same order on any machine
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        net = _networks()[model.name](n_classes, X.shape[1])
        inputs = torch.from_numpy(np.ascontiguousarray(X[..., list(model.channels)].transpose(0, 3, 1, 2)))
        targets = torch.from_numpy(y)
        counts = np.bincount(y, minlength=n_classes).astype(np.float64)
        weights = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1)), 0.0)  # as class_weight="balanced"
        criterion = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32))
        optimizer = torch.optim.Adam(net.parameters(), lr=model.lr, weight_decay=model.weight_decay)
        order = torch.Generator().manual_seed(seed)
        losses = []
        net.train()
        for _ in range(model.epochs):
            total = 0.0
            for batch in torch.randperm(len(y), generator=order).split(model.batch_size):
                optimizer.zero_grad()
                loss = criterion(net(inputs[batch]), targets[batch])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            losses.append(total / len(y))
        net.eval()
        state = {key: value.detach().numpy().copy() for key, value in net.state_dict().items()}
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)

    def predict(images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(images[..., list(model.channels)].transpose(0, 3, 1, 2)))
        with torch.no_grad():
            return net(batch).argmax(1).numpy().astype(np.int64)

    return predict, state, losses


# ---------------------------------------------------------------- metrics


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) int64: rows true class, columns predicted (``sklearn.metrics.confusion_matrix``)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).astype(np.int64)


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """UF1 and UAR of pooled predictions, over the classes present in ``y_true`` (MEGC2019's convention).

    UF1 = mean over classes of 2TP / (2TP + FP + FN); UAR = mean over classes of TP / (TP + FN).
    """
    from sklearn.metrics import f1_score, recall_score

    labels = np.unique(y_true).tolist()
    return {"uf1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
            "uar": float(recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))}


def scores_from_confusion(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UF1 and UAR of each of many (..., K, K) confusion matrices, over the classes each one's truth holds
    (the bootstrap's fast path; the same numbers as ``scores``)."""
    tp = np.diagonal(matrices, axis1=-2, axis2=-1).astype(np.float64)
    support = matrices.sum(-1).astype(np.float64)
    predicted = matrices.sum(-2).astype(np.float64)
    present = support > 0
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros_like(tp), where=(support + predicted) > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=present)
    n = np.maximum(present.sum(-1), 1)
    return (f1 * present).sum(-1) / n, (recall * present).sum(-1) / n


def bootstrap(y_true: np.ndarray, y_pred: np.ndarray, subjects: np.ndarray, n_classes: int, *,
              resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, list[float]]:
    """95 % percentile intervals of UF1 and UAR over subjects: each resample draws as many subjects
    as there are, with replacement, and scores their pooled predictions."""
    names, index = np.unique(subjects, return_inverse=True)
    per_subject = np.zeros((len(names), n_classes * n_classes), np.int64)
    np.add.at(per_subject, (index, y_true * n_classes + y_pred), 1)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), (resamples, len(names)))
    counts = np.zeros((resamples, len(names)), np.int64)
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1)
    matrices = (counts @ per_subject).reshape(resamples, n_classes, n_classes)
    uf1, uar = scores_from_confusion(matrices)
    return {"uf1": [float(v) for v in np.percentile(uf1, [2.5, 97.5])], "uar": [float(v) for v in np.percentile(uar, [2.5, 97.5])]}


# ---------------------------------------------------------------- the whole LOSO run


@dataclass
class Evaluation:
    """A LOSO run's results (``evaluate``); ``to_json`` is ``evaluation.json``'s content."""

    model: Model
    seed: int
    labels: str
    data: LabelledSet
    folds: list[FoldResult]
    predicted: np.ndarray  # (N,) int64, every clip predicted by the model trained without its fold
    seconds: float

    def summary(self, mask: np.ndarray | None = None) -> dict[str, Any]:
        """UF1, UAR, their bootstrap intervals, the confusion matrix and the clip count of the clips in ``mask``."""
        mask = np.ones(len(self.predicted), bool) if mask is None else mask
        y, p, k = self.data.y[mask], self.predicted[mask], len(self.data.classes)
        return {"clips": int(mask.sum()), "subjects": len(np.unique(self.data.subject[mask])),
                **scores(y, p), "interval": bootstrap(y, p, self.data.subject[mask], k),
                "confusion": confusion(y, p, k).tolist(),
                "per_class": {name: int((y == i).sum()) for i, name in enumerate(self.data.classes)}}

    @property
    def overall(self) -> dict[str, Any]:
        return self.summary()

    def per_dataset(self) -> dict[str, dict[str, Any]]:
        return {str(name): self.summary(self.data.dataset == name) for name in np.unique(self.data.dataset)}

    def per_subject(self) -> dict[str, dict[str, Any]]:
        out = {}
        for subject in np.unique(self.data.subject):
            mask = self.data.subject == subject
            correct = int((self.predicted[mask] == self.data.y[mask]).sum())
            out[str(subject)] = {"clips": int(mask.sum()), "correct": correct, "accuracy": correct / int(mask.sum())}
        return out

    def to_json(self) -> dict[str, Any]:
        data = self.data
        digest = hashlib.sha256(data.source.read_bytes()).hexdigest() if data.source.is_file() else None
        return {
            "what": "sammflow recognition check: leave-one-subject-out baseline (sammflow.recognition)",
            "model": self.model.name, "model_title": self.model.title, "hyperparameters": self.model.settings(),
            "epochs": self.model.epochs, "seed": self.seed,
            "fold_seeds": {str(f.fold): f.seed for f in self.folds},
            "labels": self.labels, "classes": list(data.classes),
            "features": {"path": str(data.source), "sha256": digest, "clips": data.total, "labelled_clips": len(data.y),
                         "params_hash": data.params.get("params_hash"), "params": data.params},
            "versions": _versions(), "seconds": round(self.seconds, 3),
            "metrics": {"uf1": "mean over classes of 2TP/(2TP+FP+FN), all folds' predictions pooled",
                        "uar": "mean per-class recall, all folds' predictions pooled",
                        "interval": f"95 % percentile bootstrap over subjects, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}",
                        "classes": "those present in the clips scored"},
            "overall": self.overall, "per_dataset": self.per_dataset(), "per_subject": self.per_subject(),
            "predictions": [{"clip": str(c), "subject": str(s), "dataset": str(d), "fold": int(f), "true": data.classes[int(t)],
                             "predicted": data.classes[int(p)]}
                            for c, s, d, f, t, p in zip(data.clip, data.subject, data.dataset, data.fold, data.y, self.predicted)],
        }


def _versions() -> dict[str, str]:
    versions = {"sammflow": __version__}
    for name in ("numpy", "scikit-learn", "torch"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def evaluate(data: LabelledSet | str | Path, model: str | Model = DEFAULT_MODEL, *, seed: int = DEFAULT_SEED,
             epochs: int | None = None, labels: str = "megc",
             progress: Callable[[int, int, str], None] | None = None) -> Evaluation:
    """Leave-one-subject-out: one model per fold (``train_fold``), every clip predicted by the
    model that never saw its subject. ``progress(done, total, label)`` after each fold."""
    if not isinstance(data, LabelledSet):
        data = load_labelled(data, labels=labels)
    spec = _model(model, epochs)
    if seed < 0:
        raise EvaluationError(f"--seed must be >= 0, got {seed}")
    start = time.perf_counter()
    predicted = np.full(len(data.y), -1, np.int64)
    results = []
    folds = data.folds
    for done, fold in enumerate(folds, 1):
        result = train_fold(data, fold, spec, seed=seed)
        predicted[result.test] = result.predicted
        results.append(result)
        if progress:
            progress(done, len(folds), f"fold {fold}")
    return Evaluation(spec, seed, labels, data, results, predicted, time.perf_counter() - start)


def evaluation_path(features: str | Path) -> Path:
    """Where the evaluation of ``features`` goes: ``evaluation.json`` beside it."""
    return Path(features).parent / EVALUATION_FILE


def write_evaluation(result: Evaluation) -> list[Path]:
    """Write ``evaluation.json`` (this run) and ``evaluation-<model>.json`` (kept per model, so runs of
    several models stand side by side) beside the features file, atomically. Returns both paths."""
    text = (json.dumps(result.to_json(), indent=1, allow_nan=False) + "\n").encode()
    paths = [evaluation_path(result.data.source), result.data.source.parent / f"evaluation-{result.model.name}.json"]
    for path in paths:
        write_atomic(path, text)
    return paths


def table(result: Evaluation) -> list[str]:
    """The run as a few lines of text: UF1, UAR (with intervals) and clips, overall and per dataset."""
    def line(name: str, s: dict[str, Any]) -> str:
        (f1_lo, f1_hi), (ar_lo, ar_hi) = s["interval"]["uf1"], s["interval"]["uar"]
        return (f"{name:<10} {s['uf1']:.3f} [{f1_lo:.2f}, {f1_hi:.2f}]  {s['uar']:.3f} [{ar_lo:.2f}, {ar_hi:.2f}]  "
                f"{s['clips']:>5}  {s['subjects']:>8}")

    lines = [f"{result.model.title}, leave-one-subject-out, {len(result.folds)} folds, {result.model.epochs} "
             f"{'iterations' if result.model.name == 'logreg' else 'epochs'}, seed {result.seed}: {result.seconds:.1f} s",
             f"{'':<10} {'UF1 [95% CI]':<19} {'UAR [95% CI]':<19} {'clips':>5}  {'subjects':>8}"]
    per_dataset = result.per_dataset()
    if len(per_dataset) > 1:
        lines += [line(name, s) for name, s in per_dataset.items()]
    lines.append(line("overall", result.overall))
    return lines


def params_difference(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The parameters that differ between two features files' ``params`` records: (dotted name, A's, B's),
    the params hash and preset included."""
    def flat(record: dict[str, Any]) -> dict[str, Any]:
        out = {"preset": record.get("preset"), "params_hash": record.get("params_hash")}
        for stage, values in (record.get("params") or {}).items():
            if isinstance(values, dict):
                out.update({f"{stage}.{name}": value for name, value in values.items()})
            else:
                out[stage] = values
        return out

    fa, fb = flat(a), flat(b)
    return [(name, fa.get(name), fb.get(name)) for name in sorted(set(fa) | set(fb), key=lambda n: (n != "preset", n))
            if fa.get(name) != fb.get(name)]

