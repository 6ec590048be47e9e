"""MTCNN face detection (Zhang et al. 2016) as facenet-pytorch 2.5.3 runs it, without facenet-pytorch.

This module is a port of facenet-pytorch's ``MTCNN.detect`` (``keep_all=True``) and
``models/utils/detect_face.detect_face``: the same three networks with the weights shipped in
the facenet-pytorch wheel (read from its folder; the package is never imported), the same
image pyramid, candidate crops and box regressions, and NMS that makes torchvision's choices
(ties included). The box arithmetic is numpy float32, operation for operation facenet's.

Two engines run the networks:

``"opencv"`` (CPU, the default there)
    OpenCV's ``dnn`` module, with the networks written out as Caffe definitions (the form
    MTCNN was published in) and the wheel's weights. No torch: a process that detects on CPU
    never pays torch's ≈ 2.5 s import or its ≈ 0.4 GB. Its convolutions add in another order
    than torch's, so its boxes differ from facenet's in the last float bits (≤ 1e-3 px and
    1e-5 in probability on real faces, ``tests/test_mtcnn.py``): a box rounded to whole
    pixels is facenet's unless a coordinate lies within that of a half pixel.
``"torch"`` (any device: "cpu", "cuda", "mps")
    torch's convolutions, every network input bit for bit what facenet feeds it and in the
    same memory layout (torch's convolutions round differently on different layouts). On
    CPU it gives facenet's boxes and probabilities exactly (``tests/test_mtcnn.py``). torch
    is imported when such a detector is built, not when this module is imported; torchvision
    (for one NMS function) and its ``torch._dynamo`` import (≈ 2 s) never are.

Both are faster per image than facenet on CPU: the "area" resampling of the pyramid and
crops (torch's adaptive average pooling, a third of facenet's time) is done from integral
images, exactly (``_Pixels``).

Differences from facenet, all where facenet fails or is ill-defined:

* an image smaller than ``min_face_size`` (an empty pyramid) has no faces, where facenet
  raises from ``torch.cat`` of nothing;
* a candidate box that lies wholly outside the image is dropped, where facenet's crops and
  candidates fall out of step (an ``IndexError``);
* in a batch, each image's NMS runs on that image's boxes alone, so a batch gives each image
  what it gets alone (up to the networks' float rounding, which may depend on batch size
  under torch; the OpenCV engine runs each image alone); facenet shifts the boxes of image
  *k* by *k* × (largest coordinate + 1) and suppresses them all at once, which can round
  IoUs differently.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.metadata
import importlib.util
import pickle
import struct
import threading
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

#: Parameter shapes of facenet-pytorch's PNet, RNet and ONet state dicts (``data/*.pt`` in its
#: wheel): convolutions (out, in, k, k) and dense layers (out, in) have ``.weight`` and ``.bias``,
#: PReLUs (channels,) a ``.weight``. ``dense6_3`` (ONet's landmarks) is loaded but not used.
LAYERS: dict[str, dict[str, tuple[int, ...]]] = {
    "pnet": {"conv1": (10, 3, 3, 3), "prelu1": (10,), "conv2": (16, 10, 3, 3), "prelu2": (16,), "conv3": (32, 16, 3, 3),
             "prelu3": (32,), "conv4_1": (2, 32, 1, 1), "conv4_2": (4, 32, 1, 1)},
    "rnet": {"conv1": (28, 3, 3, 3), "prelu1": (28,), "conv2": (48, 28, 3, 3), "prelu2": (48,), "conv3": (64, 48, 2, 2),
             "prelu3": (64,), "dense4": (128, 576), "prelu4": (128,), "dense5_1": (2, 128), "dense5_2": (4, 128)},
    "onet": {"conv1": (32, 3, 3, 3), "prelu1": (32,), "conv2": (64, 32, 3, 3), "prelu2": (64,), "conv3": (64, 64, 3, 3),
             "prelu3": (64,), "conv4": (128, 64, 2, 2), "prelu4": (128,), "dense5": (256, 1152), "prelu5": (256,),
             "dense6_1": (2, 256), "dense6_2": (4, 256), "dense6_3": (10, 256)},
}
_PNET_CELL, _PNET_STRIDE = 12, 2  # PNet sees 12×12 windows, 2 px apart
#: PNet networks kept, one per input size (a pyramid has 6–10 levels; two frame sizes fit).
_PNET_SIZES = 24
_CHUNK = 512  # facenet's RNet/ONet batch limit (fixed_batch_process); kept, as batch size can change rounding
_NMS_VANILLA_ABOVE = {"cpu": 4000}  # torchvision's batched_nms: a per-class loop above this many coordinates
_NMS_VANILLA_ABOVE_ELSEWHERE = 100_000


class Faces(NamedTuple):
    """The faces found in one image, in the order facenet's ``detect`` gives them."""

    boxes: np.ndarray  #: float32 (n, 4): x1, y1, x2, y2 in image pixels (not clipped to the image)
    probs: np.ndarray  #: float32 (n,): ONet's face probability


def weights_dir() -> Path:
    """The ``data`` folder of the installed facenet-pytorch wheel (``pnet.pt``, ``rnet.pt``, ``onet.pt``).

    Found without importing the package: ``find_spec`` of a top-level package only locates it,
    and the distribution's file list is the fallback.

    Raises
    ------
    FileNotFoundError
        If facenet-pytorch is not installed or its weights are missing.
    """
    candidates = []
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "data" for p in spec.submodule_search_locations]
    try:
        candidates.append(Path(str(importlib.metadata.distribution("facenet-pytorch").locate_file("facenet_pytorch/data"))))
    except importlib.metadata.PackageNotFoundError:
        pass
    for folder in candidates:
        if all((folder / f"{net}.pt").is_file() for net in LAYERS):
            return folder
    raise FileNotFoundError("MTCNN weights not found: install facenet-pytorch (requirements.txt pins 2.5.3), whose wheel ships them "
                            f"(looked in {', '.join(map(str, candidates)) or 'no facenet_pytorch folder'})")


def load_weights(net: str, folder: Path | None = None) -> dict[str, np.ndarray]:
    """One network's state dict from facenet-pytorch's wheel, checked against ``LAYERS``.

    Read without torch (``_read_state_dict``), so the OpenCV engine never imports it.

    Parameters
    ----------
    net : {"pnet", "rnet", "onet"}
    folder : Path, optional
        Where ``<net>.pt`` is; ``weights_dir()`` if omitted.

    Returns
    -------
    dict of str to ndarray
        C-contiguous float32 arrays under facenet's keys (``conv1.weight``, ``prelu1.weight``, …).
        The files hold transposed (column-major) tensors; ``nn.Module.load_state_dict`` copies
        them into row-major parameters, as this does (torch's convolution and matmul kernels
        round differently on the two).

    Raises
    ------
    ValueError
        If the file is not a torch state dict of float tensors with facenet's parameter shapes.
    """
    path = (folder or weights_dir()) / f"{net}.pt"
    state = _read_state_dict(path)
    expected = {}
    for layer, shape in LAYERS[net].items():
        expected[f"{layer}.weight"] = shape
        if not layer.startswith("prelu"):
            expected[f"{layer}.bias"] = shape[:1]
    found = {key: value.shape for key, value in state.items()}
    if found != expected:
        raise ValueError(f"{path}: not facenet-pytorch's {net} (parameters {found}, expected {expected})")
    return {key: np.array(value, dtype=np.float32, order="C") for key, value in state.items()}


#: The element types of torch's storages that a state dict of weights may hold.
_STORAGE_TYPES = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2"}


def _read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """A torch state dict of float tensors, as numpy arrays, read without torch: either of
    ``torch.save``'s formats (the legacy pickle stream facenet's files use, and the zip archive
    of torch ≥ 1.6). Only what a state dict holds is unpickled (an ``OrderedDict`` of tensors
    rebuilt from storages): anything else is refused, as ``torch.load(weights_only=True)`` would."""
    storages: dict[str, tuple[np.dtype, int]] = {}
    data: dict[str, np.ndarray] = {}

    def rebuild(storage: str, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any) -> tuple:
        return storage, int(offset), tuple(size), tuple(stride)

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
                return rebuild
            if module == "torch" and name in _STORAGE_TYPES:
                return name
            raise pickle.UnpicklingError(f"{path}: not a state dict of float tensors ({module}.{name})")

        def persistent_load(self, pid: Any) -> str:
            if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and pid[1] in _STORAGE_TYPES):
                raise pickle.UnpicklingError(f"{path}: unexpected storage {pid!r}")
            storages[str(pid[2])] = (np.dtype(_STORAGE_TYPES[pid[1]]), int(pid[4]))
            return str(pid[2])

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                prefix = names[0].split("/", 1)[0]
                state = Unpickler(archive.open(f"{prefix}/data.pkl")).load()
                for key, (dtype, count) in storages.items():
                    data[key] = np.frombuffer(archive.read(f"{prefix}/data/{key}"), dtype=dtype, count=count)
        else:
            with open(path, "rb") as f:
                for _ in range(3):  # magic number, protocol version, system info
                    pickle.load(f)
                state = Unpickler(f).load()
                for key in pickle.load(f):
                    dtype, _count = storages[str(key)]
                    (count,) = struct.unpack("<q", f.read(8))
                    data[str(key)] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype, count=count)
        if not isinstance(state, dict):
            raise ValueError(f"{path}: not a state dict")
        arrays = {}
        for name, (key, offset, size, stride) in state.items():
            storage = data[key]
            if min(size, default=1) > 0 and offset + sum((n - 1) * step for n, step in zip(size, stride)) >= len(storage):
                raise ValueError(f"tensor {name} lies outside its storage")
            arrays[str(name)] = np.lib.stride_tricks.as_strided(storage[offset:], size, tuple(n * storage.itemsize for n in stride))
        return arrays
    except (pickle.UnpicklingError, EOFError, KeyError, struct.error, ValueError, TypeError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a torch state dict of float tensors ({exc})") from exc


def pyramid(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """facenet's image scales: the smallest face maps to PNet's 12 px window, then × ``factor``
    while the shorter side stays ≥ 12 px. Empty when the image is smaller than ``min_face_size``."""
    scale = 12.0 / min_face_size
    shortest = min(height, width) * scale
    scales = []
    while shortest >= 12:
        scales.append(scale)
        scale = scale * factor
        shortest = shortest * factor
    return scales


#: The engines that run MTCNN's networks (see the module's docstring).
ENGINES = ("opencv", "torch")


class MTCNN:
    """facenet-pytorch's ``MTCNN(keep_all=True, post_process=False)`` face detector, without facenet-pytorch.

    Parameters
    ----------
    min_face_size : float
        Smallest face looked for, in image pixels (facenet's ``min_face_size``; its default 20).
    thresholds : three floats
        PNet, RNet and ONet face-probability thresholds.
    factor : float
        Scale step of the image pyramid.
    select_largest : bool
        Order each image's faces by box area, largest first (facenet's default); otherwise by
        probability, highest first.
    device : str or torch.device
        Where the networks run ("cpu", "cuda", "cuda:1", "mps"); anything but "cpu" runs them
        with torch.
    engine : {"opencv", "torch"}, optional
        What runs the networks on CPU: OpenCV's dnn (the default: no torch import; facenet's
        boxes to ≤ 1e-3 px; where OpenCV has no Caffe importer, torch is the default) or torch
        (facenet's boxes exactly). Only "torch" runs on other devices.
    weights : Path, optional
        Folder with ``pnet.pt``, ``rnet.pt`` and ``onet.pt``; the facenet-pytorch wheel's if omitted.

    Notes
    -----
    Building one reads the weights (≈ 2 MB); the torch engine also imports torch (≈ 2.5 s).
    ``detect`` keeps facenet's calling convention (``None`` for no face); ``find_faces`` is
    the plain one. One detector may be used from several threads.
    """

    def __init__(
        self,
        min_face_size: float = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        select_largest: bool = True,
        device: Any = "cpu",
        engine: str | None = None,
        weights: Path | None = None,
    ) -> None:
        if not min_face_size > 0:
            raise ValueError(f"min_face_size must be > 0, got {min_face_size}")
        if len(thresholds) != 3:
            raise ValueError(f"thresholds must be three probabilities (PNet, RNet, ONet), got {thresholds!r}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        on_cpu = str(device) == "cpu"
        engine = engine or ("opencv" if on_cpu and opencv_engine_available() else "torch")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if engine == "opencv" and not on_cpu:
            raise ValueError(f"the opencv engine runs on cpu only, got device {str(device)!r}: use engine='torch'")
        if engine == "opencv" and not opencv_engine_available():
            raise ValueError(f"the opencv engine needs OpenCV's Caffe importer, which OpenCV {cv2.__version__} lacks "
                             "(requirements.txt pins 4.14): use engine='torch'")
        self.min_face_size = min_face_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.select_largest = bool(select_largest)
        self.engine = engine
        folder = weights or weights_dir()
        self._nets = _OpenCVNets(folder) if engine == "opencv" else _TorchNets(folder, device)
        self.device = self._nets.device

    def __repr__(self) -> str:
        return (f"MTCNN(min_face_size={self.min_face_size}, thresholds={self.thresholds}, factor={self.factor}, "
                f"select_largest={self.select_largest}, device={str(self.device)!r}, engine={self.engine!r})")

    # ------------------------------------------------------------ public

    def detect(self, images: Any) -> tuple[Any, Any]:
        """facenet's ``MTCNN(keep_all=True).detect(images)``: boxes and probabilities.

        Parameters
        ----------
        images : ndarray or torch.Tensor (H, W, 3) or (N, H, W, 3), or a list of (H, W, 3) arrays
            RGB, values 0–255 (uint8 usually); the images of a batch must have one size.

        Returns
        -------
        boxes : float32 ndarray (n, 4), or None
            For one image: its faces' ``x1, y1, x2, y2``; ``None`` if it has none.
        probs : float32 ndarray (n,), or ``[None]``
            For one image: their probabilities; ``[None]`` if it has no face (as facenet).

        For a batch (a 4-D array or tensor, or a list), two lists with one such item per image
        (facenet gives object arrays).
        """
        found = [(faces.boxes, faces.probs) if len(faces.probs) else (None, [None]) for faces in self.find_faces(images)]
        if not _is_batch(images):
            return found[0]
        return [boxes for boxes, _ in found], [probs for _, probs in found]

    def find_faces(self, images: Any) -> list[Faces]:
        """The faces in each image.

        Parameters
        ----------
        images : ndarray or torch.Tensor (H, W, 3) or (N, H, W, 3), or a sequence of (H, W, 3) arrays
            RGB, values 0–255; all of one size. Under torch they go through the networks
            together; the OpenCV engine runs them one by one (its results do not depend on
            the batch).

        Returns
        -------
        list of Faces
            One per image (one for a single (H, W, 3) image), with empty arrays where there is
            no face; largest box first if ``select_largest``, else most probable first.
        """
        batch = _as_batch(images)
        groups = [batch] if self.engine == "torch" else [batch[i:i + 1] for i in range(len(batch))]
        found = []
        with self._nets.inference():
            for group in groups:
                pixels = _Pixels(group, self._nets.resampler(group))
                boxes, image_inds = self._run(pixels)
                for index in range(pixels.count):
                    box = boxes[image_inds == index]
                    if self.select_largest:
                        box = box[np.argsort((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))[::-1]]
                    found.append(Faces(np.ascontiguousarray(box[:, :4]), np.ascontiguousarray(box[:, 4])))
        return found

    # ------------------------------------------------------------ the three stages (facenet's detect_face)

    def _run(self, pixels: _Pixels) -> tuple[np.ndarray, np.ndarray]:
        """All images' faces: float32 (k, 5) rows ``x1, y1, x2, y2, prob``, and each row's image index."""
        h, w = pixels.height, pixels.width
        scales = pyramid(h, w, self.min_face_size, self.factor)
        if not scales:
            return np.zeros((0, 5), np.float32), np.zeros(0, np.int64)
        nets = self._nets

        # first stage: PNet over the pyramid, NMS within each scale, then across scales
        boxes, image_inds = [], []
        for scale in scales:
            im_data = _normalised(pixels.level(int(h * scale + 1), int(w * scale + 1)))
            reg, probs = nets.run("pnet", im_data)
            boxes_scale, inds_scale = _generate_bounding_box(reg, probs[:, 1], scale, self.thresholds[0])
            pick = nets.batched_nms(boxes_scale[:, :4], boxes_scale[:, 4], inds_scale, 0.5)
            boxes.append(boxes_scale[pick])
            image_inds.append(inds_scale[pick])
        boxes, image_inds = np.concatenate(boxes), np.concatenate(image_inds)
        pick = nets.batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds = boxes[pick], image_inds[pick]
        regw = boxes[:, 2] - boxes[:, 0]
        regh = boxes[:, 3] - boxes[:, 1]
        qq1 = boxes[:, 0] + boxes[:, 5] * regw
        qq2 = boxes[:, 1] + boxes[:, 6] * regh
        qq3 = boxes[:, 2] + boxes[:, 7] * regw
        qq4 = boxes[:, 3] + boxes[:, 8] * regh
        boxes = _rerec(np.stack([qq1, qq2, qq3, qq4, boxes[:, 4]], axis=1))

        # second stage: RNet on 24×24 crops
        if len(boxes) > 0:
            boxes, image_inds, mv = self._refine(pixels, boxes, image_inds, "rnet", 24, self.thresholds[1])
            pick = nets.batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
            boxes, image_inds, mv = boxes[pick], image_inds[pick], mv[pick]
            boxes = _rerec(_bbreg(boxes, mv))

        # third stage: ONet on 48×48 crops, then NMS by intersection over the smaller box
        if len(boxes) > 0:
            boxes, image_inds, mv = self._refine(pixels, boxes, image_inds, "onet", 48, self.thresholds[2])
            boxes = _bbreg(boxes, mv)
            pick = _batched_nms_min(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
            boxes, image_inds = boxes[pick], image_inds[pick]
        return boxes[:, :5], image_inds

    def _refine(self, pixels: _Pixels, boxes: np.ndarray, image_inds: np.ndarray, net: str, size: int,
                threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each box's crop (clipped to the image) resampled to ``size`` px, through ``net`` in
        facenet's chunks (boxes wholly outside the image are dropped first); the boxes whose
        face score passes ``threshold``, with that score as their 5th column, their image
        indices and their box regressions."""
        y, ey, x, ex = _pad(boxes, pixels.width, pixels.height)
        inside = (ey > y - 1) & (ex > x - 1)
        if not inside.all():
            boxes, image_inds = boxes[inside], image_inds[inside]
            y, ey, x, ex = y[inside], ey[inside], x[inside], ex[inside]
        if len(boxes) == 0:
            return boxes[:, :5], image_inds, np.zeros((0, 4), np.float32)
        im_data = _normalised(pixels.crops(image_inds, y - 1, ey, x - 1, ex, size))
        outs = [self._nets.run(net, im_data[i:i + _CHUNK]) for i in range(0, len(im_data), _CHUNK)]
        regression, probs = (np.concatenate(parts) for parts in zip(*outs))
        score = probs[:, 1]
        ipass = score > threshold
        return np.concatenate((boxes[ipass, :4], score[ipass, None]), axis=1), image_inds[ipass], regression[ipass]


def _as_batch(images: Any) -> np.ndarray:
    """(N, H, W, 3) array of ``images`` (a copy: the caller's are never touched)."""
    if isinstance(images, np.ndarray) or hasattr(images, "detach"):  # an array, or a torch tensor
        batch = np.array(images.detach().cpu() if hasattr(images, "detach") else images)
        if batch.ndim == 3:
            batch = batch[None]
    else:
        arrays = [np.asarray(image) for image in images]
        if not arrays:
            raise ValueError("no images given")
        if any(a.shape != arrays[0].shape for a in arrays):
            raise ValueError(f"a batch must hold images of one size, got {sorted({a.shape for a in arrays})}")
        batch = np.stack(arrays)
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"images must be RGB (H, W, 3) or (N, H, W, 3), got shape {batch.shape}")
    return batch


class _Pixels:
    """A batch's pixels, resampled as facenet's ``imresample`` does (torch's "area"
    interpolation: adaptive average pooling), in the memory layout torch's would have (the
    torch engine's rounding depends on it).

    The window sums come from integral images, ≈ 10× faster than torch's pooling. For uint8
    images they are integers below 2**24, so float32 holds them exactly whatever order torch
    adds them in, and torch then divides by the window's height, then its width, as done here.
    Where they would not be exact (other dtypes, windows too large), ``fallback`` resamples
    (torch, for the torch engine); without one, float64 sums are used.
    """

    def __init__(self, batch: np.ndarray, fallback: Any = None) -> None:
        self.count, self.height, self.width = (int(n) for n in batch.shape[:3])
        self._fallback = fallback
        self._integral = None
        # grey frames given as RGB (three equal channels, as sammflow detects): one channel's sums
        # serve all three, bit for bit (without a fallback: the torch engine keeps torch's layout)
        self._grey = fallback is None and all(np.array_equal(batch[..., 0], batch[..., c]) for c in (1, 2))
        channels = batch[..., :1] if self._grey else batch
        if batch.dtype == np.uint8 and 255 * self.height * self.width < 2**31:
            sums = [cv2.integral(np.ascontiguousarray(image), sdepth=cv2.CV_32S) for image in channels]
        elif fallback is None:
            sums = [cv2.integral(np.ascontiguousarray(image, dtype=np.float64), sdepth=cv2.CV_64F) for image in channels]
        else:
            return
        shape = (self.height + 1, self.width + 1, channels.shape[-1])  # cv2.integral drops a single channel's axis
        self._integral = np.stack([s.reshape(shape) for s in sums]) if len(sums) > 1 else sums[0].reshape((1, *shape))

    def _channels(self, planes: np.ndarray) -> np.ndarray:
        """(N, C, h, w) planes as the three channels the networks take (a grey plane repeated)."""
        return np.broadcast_to(planes, (planes.shape[0], 3, *planes.shape[2:])) if self._grey else planes

    def level(self, height: int, width: int) -> Any:
        """The whole images resampled to ``height`` × ``width``: (N, 3, h, w), channels-last strides."""
        r0, r1 = _windows(0, self.height, height)
        c0, c1 = _windows(0, self.width, width)
        if not self._exact(r1 - r0, c1 - c0):
            return self._fallback.level(height, width)
        rows = np.take(self._integral, r1, axis=1) - np.take(self._integral, r0, axis=1)
        sums = (np.take(rows, c1, axis=2) - np.take(rows, c0, axis=2)).astype(np.float32)
        sums /= (r1 - r0).astype(np.float32)[:, None, None]
        sums /= (c1 - c0).astype(np.float32)[None, :, None]
        return self._channels(sums.transpose(0, 3, 1, 2))

    def crops(self, image_inds: np.ndarray, top: np.ndarray, bottom: np.ndarray, left: np.ndarray, right: np.ndarray, size: int) -> Any:
        """Crops ``[top:bottom, left:right]`` of images ``image_inds`` resampled to ``size`` × ``size``:
        (K, 3, size, size), contiguous (as torch resamples a crop view)."""
        r0, r1 = _windows(top[:, None], (bottom - top)[:, None], size)
        c0, c1 = _windows(left[:, None], (right - left)[:, None], size)
        if not self._exact(r1 - r0, c1 - c0):
            return self._fallback.crops(image_inds, top, bottom, left, right, size)
        heights, widths = (r1 - r0).astype(np.float32)[:, :, None, None], (c1 - c0).astype(np.float32)[:, None, :, None]
        # each window's four corners, from the flattened integral images (faster than 3-D fancy indexing)
        corners = self._integral.reshape(-1, self._integral.shape[-1])
        row_start = image_inds[:, None].astype(np.int64) * (self.height + 1)
        r0, r1 = ((row_start + r0) * (self.width + 1))[:, :, None], ((row_start + r1) * (self.width + 1))[:, :, None]
        c0, c1 = c0[:, None, :], c1[:, None, :]
        sums = ((np.take(corners, r1 + c1, axis=0) - np.take(corners, r0 + c1, axis=0))
                - (np.take(corners, r1 + c0, axis=0) - np.take(corners, r0 + c0, axis=0))).astype(np.float32)
        sums /= heights
        sums /= widths
        return np.ascontiguousarray(self._channels(sums.transpose(0, 3, 1, 2)))

    def _exact(self, heights: np.ndarray, widths: np.ndarray) -> bool:
        if self._integral is None:
            return False
        return self._fallback is None or 255 * int(heights.max()) * int(widths.max()) < 2**24


def _windows(start: Any, length: Any, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Torch's adaptive-pooling windows: output ``i`` of ``count`` averages
    ``[start + ⌊i·length/count⌋, start + ⌈(i+1)·length/count⌉)``."""
    i = np.arange(count, dtype=np.int64)
    length = np.asarray(length, dtype=np.int64)
    return start + i * length // count, start + ((i + 1) * length + count - 1) // count


def _is_batch(images: Any) -> bool:
    return isinstance(images, (list, tuple)) or getattr(images, "ndim", 0) == 4


# ---------------------------------------------------------------- the torch engine (facenet's PNet, RNet, ONet)


class _TorchNets:
    """facenet's three networks on torch, on ``device``; inputs and outputs are numpy arrays
    (inputs keep their strides: torch's rounding depends on the layout)."""

    def __init__(self, folder: Path, device: Any) -> None:
        import torch

        self._torch = torch
        self.device = torch.device(device)
        self._params = {net: {k: torch.from_numpy(v).to(self.device) for k, v in load_weights(net, folder).items()} for net in LAYERS}
        self._vanilla_above = _NMS_VANILLA_ABOVE.get(self.device.type, _NMS_VANILLA_ABOVE_ELSEWHERE)

    @contextlib.contextmanager
    def inference(self) -> Iterator[None]:
        """No autograd, and on CUDA full float32 convolutions: cuDNN's default TF32 (10-bit
        mantissas) moved boxes by up to 0.01 px from the CPU's, and a frame batched with others
        by 1.5 px from itself alone (another candidate won an NMS tie; measured on an H200)."""
        cudnn = self._torch.backends.cudnn
        tf32 = cudnn.allow_tf32
        cudnn.allow_tf32 = False
        try:
            with self._torch.inference_mode():
                yield
        finally:
            cudnn.allow_tf32 = tf32

    def resampler(self, batch: np.ndarray) -> _TorchResample:
        return _TorchResample(self._torch, batch, self.device)

    def run(self, net: str, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Box regressions and face/non-face softmax of ``net`` (pnet: (N, 4, h, w) and (N, 2, h, w); rnet, onet: (N, 4) and (N, 2))."""
        torch = self._torch
        tensor = (x if isinstance(x, torch.Tensor) else torch.from_numpy(x)).to(self.device)
        regression, probs = {"pnet": _pnet, "rnet": _rnet, "onet": _onet}[net](torch, self._params[net], tensor)
        return regression.cpu().numpy(), probs.cpu().numpy()

    def batched_nms(self, boxes: np.ndarray, scores: np.ndarray, image_inds: np.ndarray, threshold: float) -> np.ndarray:
        def sort_descending(values: np.ndarray) -> np.ndarray:
            return self._torch.from_numpy(values).sort(descending=True)[1].numpy()

        return _batched_nms(boxes, scores, image_inds, threshold, vanilla_above=self._vanilla_above, sort_descending=sort_descending)


class _TorchResample:
    """torch's "area" resampling of a batch (facenet's ``imresample``), where ``_Pixels``'s sums
    would not be exact."""

    def __init__(self, torch: Any, batch: np.ndarray, device: Any) -> None:
        self._torch = torch
        self._floats = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).type(torch.float32)  # channels-last, as facenet's

    def level(self, height: int, width: int) -> Any:
        return _imresample(self._torch, self._floats, (height, width))

    def crops(self, image_inds: np.ndarray, top: np.ndarray, bottom: np.ndarray, left: np.ndarray, right: np.ndarray, size: int) -> Any:
        return self._torch.cat([_imresample(self._torch, self._floats[int(n), :, t:b, l:r].unsqueeze(0), (size, size))
                                for n, t, b, l, r in zip(image_inds, top, bottom, left, right)], dim=0)


def _conv_prelu(F: Any, p: dict[str, Any], x: Any, n: int) -> Any:
    return F.prelu(F.conv2d(x, p[f"conv{n}.weight"], p[f"conv{n}.bias"]), p[f"prelu{n}.weight"])


def _pnet(torch: Any, p: dict[str, Any], x: Any) -> tuple[Any, Any]:
    """Box regression (N, 4, h, w) and face/non-face softmax (N, 2, h, w) for each 12×12 window."""
    F = torch.nn.functional
    x = _max_pool(torch, _conv_prelu(F, p, x, 1), 2, 2)
    x = _conv_prelu(F, p, _conv_prelu(F, p, x, 2), 3)
    return F.conv2d(x, p["conv4_2.weight"], p["conv4_2.bias"]), F.softmax(F.conv2d(x, p["conv4_1.weight"], p["conv4_1.bias"]), dim=1)


def _max_pool(torch: Any, x: Any, kernel: int, stride: int) -> Any:
    """``max_pool2d(ceil_mode=True)``. A maximum is exact in any memory layout, and torch's CPU
    kernel is several times faster on channels-last tensors, so contiguous ones go there and
    back: the result keeps the input's layout, on which the next convolution's rounding depends."""
    F = torch.nn.functional
    if x.device.type == "cpu" and x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last):
        return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), kernel, stride, ceil_mode=True).contiguous()
    return F.max_pool2d(x, kernel, stride, ceil_mode=True)


def _flatten(x: Any) -> Any:
    return x.permute(0, 3, 2, 1).contiguous().view(x.shape[0], -1)  # facenet's (Caffe's) order


def _rnet(torch: Any, p: dict[str, Any], x: Any) -> tuple[Any, Any]:
    """Box regression (N, 4) and softmax (N, 2) for 24×24 crops."""
    F = torch.nn.functional
    x = _max_pool(torch, _conv_prelu(F, p, x, 1), 3, 2)
    x = _max_pool(torch, _conv_prelu(F, p, x, 2), 3, 2)
    x = F.prelu(F.linear(_flatten(_conv_prelu(F, p, x, 3)), p["dense4.weight"], p["dense4.bias"]), p["prelu4.weight"])
    return F.linear(x, p["dense5_2.weight"], p["dense5_2.bias"]), F.softmax(F.linear(x, p["dense5_1.weight"], p["dense5_1.bias"]), dim=1)


def _onet(torch: Any, p: dict[str, Any], x: Any) -> tuple[Any, Any]:
    """Box regression (N, 4) and softmax (N, 2) for 48×48 crops (the landmarks, ``dense6_3``, are not computed)."""
    F = torch.nn.functional
    x = _max_pool(torch, _conv_prelu(F, p, x, 1), 3, 2)
    x = _max_pool(torch, _conv_prelu(F, p, x, 2), 3, 2)
    x = _max_pool(torch, _conv_prelu(F, p, x, 3), 2, 2)
    x = F.prelu(F.linear(_flatten(_conv_prelu(F, p, x, 4)), p["dense5.weight"], p["dense5.bias"]), p["prelu5.weight"])
    return F.linear(x, p["dense6_2.weight"], p["dense6_2.bias"]), F.softmax(F.linear(x, p["dense6_1.weight"], p["dense6_1.bias"]), dim=1)


def _imresample(torch: Any, img: Any, size: tuple[int, int]) -> Any:
    return torch.nn.functional.interpolate(img, size=size, mode="area")


# ---------------------------------------------------------------- the OpenCV engine (the same networks as Caffe models)


#: Each network's layers after its input, as (kind, facenet's name, top blob, bottom blob,
#: kernel, pooling stride; for "flatten" the input's channels): the architecture of facenet's modules, which is
#: MTCNN's original Caffe one. Pooling is Caffe's, which rounds up (facenet's ``ceil_mode``).
#: "flatten" is a fully connected layer whose input facenet flattens in (W, H, C) order.
_CAFFE_LAYERS: dict[str, tuple[tuple[Any, ...], ...]] = {
    "pnet": (("conv", "conv1", "c1", "data", 3), ("pool", "pool1", "p1", "c1", 2, 2), ("conv", "conv2", "c2", "p1", 3),
             ("conv", "conv3", "c3", "c2", 3), ("head", "conv4_1", "score", "c3", 1), ("head", "conv4_2", "regression", "c3", 1)),
    "rnet": (("conv", "conv1", "c1", "data", 3), ("pool", "pool1", "p1", "c1", 3, 2), ("conv", "conv2", "c2", "p1", 3),
             ("pool", "pool2", "p2", "c2", 3, 2), ("conv", "conv3", "c3", "p2", 2), ("flatten", "dense4", "d4", "c3", 64),
             ("dense", "dense5_1", "score", "d4"), ("dense", "dense5_2", "regression", "d4")),
    "onet": (("conv", "conv1", "c1", "data", 3), ("pool", "pool1", "p1", "c1", 3, 2), ("conv", "conv2", "c2", "p1", 3),
             ("pool", "pool2", "p2", "c2", 3, 2), ("conv", "conv3", "c3", "p2", 3), ("pool", "pool3", "p3", "c3", 2, 2),
             ("conv", "conv4", "c4", "p3", 2), ("flatten", "dense5", "d5", "c4", 128), ("dense", "dense6_1", "score", "d5"),
             ("dense", "dense6_2", "regression", "d5")),
}


def opencv_engine_available() -> bool:
    """Whether this OpenCV can run the OpenCV engine: its dnn module reads Caffe models (OpenCV 4
    does; OpenCV 5 dropped the Caffe importer, and then the torch engine runs on CPU too)."""
    return hasattr(cv2.dnn, "readNetFromCaffe")


class _OpenCVNets:
    """facenet's three networks on OpenCV's dnn module (CPU), from the wheel's weights.

    A ``cv2.dnn.Net`` is not safe to run from two threads at once: each runs under its lock
    (OpenCV releases the GIL meanwhile, so another thread can decode the next frame).
    """

    device = "cpu"

    def __init__(self, folder: Path) -> None:
        self._weights = {net: load_weights(net, folder) for net in LAYERS}
        # RNet and ONet: one network each. PNet runs on every pyramid level: a network for each
        # level's size (``_level_net``), as one network given another size re-allocates all its
        # layers (a third of PNet's time)
        self._nets = {net: _caffe_net(net, self._weights[net]) for net in LAYERS if net != "pnet"}
        self._locks = {net: threading.Lock() for net in self._nets}
        self._levels: collections.OrderedDict[tuple[int, ...], tuple[Any, threading.Lock]] = collections.OrderedDict()
        self._levels_lock = threading.Lock()

    def inference(self) -> Any:
        return contextlib.nullcontext()

    def resampler(self, batch: np.ndarray) -> None:
        return None  # float64 sums where uint8 ones would not be exact

    def run(self, net: str, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """Box regressions and face/non-face softmax of ``net``, as ``_TorchNets.run``."""
        blob = np.ascontiguousarray(x, dtype=np.float32)
        model, lock = self._level_net(blob.shape) if net == "pnet" else (self._nets[net], self._locks[net])
        with lock:
            model.setInput(blob)
            regression, probs = model.forward(["regression", "prob"])
        return regression, probs

    def _level_net(self, shape: tuple[int, ...]) -> tuple[Any, threading.Lock]:
        """PNet for inputs of ``shape`` (the most recently used ``_PNET_SIZES`` kept) and its lock."""
        with self._levels_lock:
            found = self._levels.get(shape)
            if found is None:
                found = self._levels[shape] = (_caffe_net("pnet", self._weights["pnet"]), threading.Lock())
                if len(self._levels) > _PNET_SIZES:
                    self._levels.popitem(last=False)
            else:
                self._levels.move_to_end(shape)
            return found

    def batched_nms(self, boxes: np.ndarray, scores: np.ndarray, image_inds: np.ndarray, threshold: float) -> np.ndarray:
        def sort_descending(values: np.ndarray) -> np.ndarray:
            return np.argsort(-values, kind="stable")

        return _batched_nms(boxes, scores, image_inds, threshold, vanilla_above=_NMS_VANILLA_ABOVE["cpu"], sort_descending=sort_descending)


def _caffe_net(net: str, weights: dict[str, np.ndarray]) -> Any:
    """``cv2.dnn`` network of facenet's ``net``: its Caffe definition (text) and a Caffe model
    (protobuf ``NetParameter`` holding the weights), both made here, in memory. Each layer is
    named after its output blob, so ``forward(["regression", "prob"])`` gives the two results."""
    shape = {"pnet": (12, 12), "rnet": (24, 24), "onet": (48, 48)}[net]
    text = [f'name: "{net}"', 'input: "data"', f"input_shape {{ dim: 1 dim: 3 dim: {shape[0]} dim: {shape[1]} }}"]
    layers = []

    def layer(name: str, kind: str, bottom: str, top: str, options: str, blobs: Sequence[np.ndarray]) -> None:
        text.append(f'layer {{ name: "{name}" type: "{kind}" bottom: "{bottom}" top: "{top}" {options} }}')
        body = _proto_bytes(1, name.encode()) + _proto_bytes(2, kind.encode()) + b"".join(_proto_bytes(7, _blob(b)) for b in blobs)
        layers.append(_proto_bytes(100, body))

    for kind, name, top, bottom, *size in _CAFFE_LAYERS[net]:
        if kind == "pool":
            text.append(f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{top}" '
                        f"pooling_param {{ pool: MAX kernel_size: {size[0]} stride: {size[1]} }} }}")
            continue
        weight, bias = weights[f"{name}.weight"], weights[f"{name}.bias"]
        if kind in ("conv", "head"):
            layer(top, "Convolution", bottom, top, f"convolution_param {{ num_output: {len(weight)} kernel_size: {size[0]} }}", (weight, bias))
        else:
            if kind == "flatten":  # facenet flattens (C, H, W) maps in (W, H, C) order: reorder the columns to Caffe's (C, H, W)
                channels = size[0]
                side = int(round((weight.shape[1] / channels) ** 0.5))
                weight = weight.reshape(-1, side, side, channels).transpose(0, 3, 2, 1).reshape(len(weight), -1)
            layer(top, "InnerProduct", bottom, top, f"inner_product_param {{ num_output: {len(weight)} }}", (weight, bias))
        if kind in ("conv", "flatten"):
            prelu = f"prelu{name[-1]}"
            layer(f"{top}_{prelu}", "PReLU", top, top, "", (weights[f"{prelu}.weight"],))
    text.append('layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }')
    model = cv2.dnn.readNetFromCaffe(np.frombuffer("\n".join(text).encode(), np.uint8), np.frombuffer(b"".join(layers), np.uint8))
    model.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    model.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return model


def _proto_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _proto_bytes(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _proto_varint(field << 3 | 2) + _proto_varint(len(payload)) + payload


def _blob(array: np.ndarray) -> bytes:
    """Caffe's ``BlobProto``: ``shape`` (field 7, a ``BlobShape`` of packed ``dim``) and packed float ``data`` (field 5)."""
    array = np.ascontiguousarray(array, dtype="<f4")
    return _proto_bytes(7, _proto_bytes(1, b"".join(_proto_varint(d) for d in array.shape))) + _proto_bytes(5, array.tobytes())


# ---------------------------------------------------------------- boxes (facenet's helpers, same operations, in numpy float32)


def _normalised(im_data: Any) -> Any:
    return (im_data - 127.5) * 0.0078125


def _generate_bounding_box(reg: np.ndarray, probs: np.ndarray, scale: float, thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """PNet windows with probability ≥ ``thresh``: (k, 9) rows ``x1, y1, x2, y2, prob, 4 regressions``."""
    image_inds, rows, cols = np.nonzero(probs >= thresh)
    score = probs[image_inds, rows, cols]
    regressions = reg[image_inds, :, rows, cols]
    bb = np.stack([cols, rows], axis=1).astype(np.float32)
    scale = np.float32(scale)  # as torch divides a float32 tensor by a Python float
    q1 = np.floor((_PNET_STRIDE * bb + 1) / scale)
    q2 = np.floor((_PNET_STRIDE * bb + _PNET_CELL - 1 + 1) / scale)
    return np.concatenate([q1, q2, score[:, None], regressions], axis=1), image_inds


def _bbreg(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply regressions ``reg`` (k, 4) to ``boxes`` in place."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    b1 = boxes[:, 0] + reg[:, 0] * w
    b2 = boxes[:, 1] + reg[:, 1] * h
    b3 = boxes[:, 2] + reg[:, 2] * w
    b4 = boxes[:, 3] + reg[:, 3] * h
    boxes[:, :4] = np.stack([b1, b2, b3, b4], axis=1)
    return boxes


def _rerec(boxes: np.ndarray) -> np.ndarray:
    """Make ``boxes`` square (side = the longer side, same centre), in place."""
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side[:, None]
    return boxes


def _pad(boxes: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """1-based inclusive crop bounds ``y, ey, x, ex`` (int32), truncated and clipped to the image."""
    boxes = np.trunc(boxes[:, :4]).astype(np.int32)
    x, y, ex, ey = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    x[x < 1] = 1
    y[y < 1] = 1
    ex[ex > w] = w
    ey[ey > h] = h
    return y, ey, x, ex


# ---------------------------------------------------------------- NMS


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """torchvision's CPU ``nms`` kernel: greedy, highest score first (stable on ties), IoU in
    float32 with areas ``(x2 − x1)·(y2 − y1)``, suppressing IoU > ``threshold``. Kept indices,
    highest score first."""
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, k]) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    rest = np.argsort(-scores, kind="stable")
    keep = []
    while rest.size:
        i, rest = rest[0], rest[1:]
        keep.append(i)
        width = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), np.float32(0))
        height = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), np.float32(0))
        inter = width * height
        rest = rest[~(inter / (areas[i] + areas[rest] - inter) > threshold)]
    return np.asarray(keep, dtype=np.int64)


def _batched_nms(boxes: np.ndarray, scores: np.ndarray, image_inds: np.ndarray, threshold: float, *, vanilla_above: int,
                 sort_descending: Any) -> np.ndarray:
    """torchvision's ``batched_nms`` as it runs on each image alone.

    It keeps the same boxes in the same order (which later stages' ties depend on): greedy NMS
    in score order, then, above ``vanilla_above`` coordinates (1000 boxes on CPU), torchvision's
    re-sort of the kept indices by ``sort_descending`` (its ``Tensor.sort``, which is not
    stable). Returns indices into ``boxes``, image by image.
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    keep = []
    for image in np.unique(image_inds):
        members = np.flatnonzero(image_inds == image)
        kept = members[_nms(boxes[members], scores[members], threshold)]
        if 4 * len(members) > vanilla_above:  # keep mask → indices ascending → Tensor.sort(descending=True)
            kept = np.sort(kept)
            kept = kept[sort_descending(scores[kept])]
        keep.append(kept)
    return np.concatenate(keep)


def _nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """facenet's ``nms_numpy(..., 'Min')``: greedy on ``np.argsort`` (quicksort) order, overlap =
    intersection / smaller area, areas ``(x2 − x1 + 1)·(y2 − y1 + 1)``, keeping overlap ≤ ``threshold``."""
    x1, y1, x2, y2 = boxes[:, 0].copy(), boxes[:, 1].copy(), boxes[:, 2].copy(), boxes[:, 3].copy()
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    pick = []
    while order.size > 0:
        i, order = order[-1], order[:-1]
        pick.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order]) - np.maximum(x1[i], x1[order]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order]) - np.maximum(y1[i], y1[order]) + 1)
        overlap = w * h / np.minimum(area[i], area[order])
        order = order[overlap <= threshold]
    return pick


def _batched_nms_min(boxes: np.ndarray, scores: np.ndarray, image_inds: np.ndarray, threshold: float) -> np.ndarray:
    """``_nms_min`` within each image; indices image by image, each image's in facenet's order."""
    keep = [members[_nms_min(boxes[members], scores[members], threshold)]
            for members in (np.flatnonzero(image_inds == image) for image in np.unique(image_inds))]
    return np.concatenate(keep) if keep else np.zeros(0, np.int64)
