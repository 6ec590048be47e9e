"""MTCNN face detection (Zhang et al. 2016) as facenet-pytorch 2.5.3 runs it, with torch alone.

facenet-pytorch's detector imports torchvision (for one NMS function and an unused image
transform), and torchvision's import pulls in ``torch._dynamo``: ≈ 2 s of start-up that
detection never uses. This module is a port of its ``MTCNN.detect`` (``keep_all=True``) and
``models/utils/detect_face.detect_face``: the same three networks with the weights shipped in
the facenet-pytorch wheel (read from its folder; the package is never imported), the same
image pyramid, candidate crops and box regressions, NMS that makes torchvision's choices
(ties included), and every network input bit for bit what facenet feeds it, in the same
memory layout (torch's convolutions round differently on different layouts). On CPU it gives
facenet's boxes and probabilities exactly (``tests/test_mtcnn.py``).

It is ≈ 1.5–2× faster per image than facenet on CPU, with the same results: the "area"
resampling of the pyramid and crops (torch's adaptive average pooling, a third of facenet's
time) is done from integral images when exact (``_Pixels``), and max-pooling runs on
channels-last copies, torch's fast kernel (``_max_pool``).

Differences, all where facenet fails or is ill-defined:

* an image smaller than ``min_face_size`` (an empty pyramid) has no faces, where facenet
  raises from ``torch.cat`` of nothing;
* a candidate box that lies wholly outside the image is dropped, where facenet's crops and
  candidates fall out of step (an ``IndexError``);
* in a batch, each image's NMS runs on that image's boxes alone, so a batch gives each image
  what it gets alone (up to the networks' float rounding, which may depend on batch size);
  facenet shifts the boxes of image *k* by *k* × (largest coordinate + 1) and suppresses them
  all at once, which can round IoUs differently.

torch is imported when a detector is built, not when this module is imported.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Sequence
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


def load_weights(net: str, folder: Path | None = None) -> dict[str, Any]:
    """One network's state dict from facenet-pytorch's wheel, checked against ``LAYERS``.

    Parameters
    ----------
    net : {"pnet", "rnet", "onet"}
    folder : Path, optional
        Where ``<net>.pt`` is; ``weights_dir()`` if omitted.

    Returns
    -------
    dict of str to torch.Tensor
        Contiguous float32 tensors under facenet's keys (``conv1.weight``, ``prelu1.weight``, …).
    """
    import torch

    path = (folder or weights_dir()) / f"{net}.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = {}
    for layer, shape in LAYERS[net].items():
        expected[f"{layer}.weight"] = shape
        if not layer.startswith("prelu"):
            expected[f"{layer}.bias"] = shape[:1]
    found = {key: tuple(value.shape) for key, value in state.items()}
    if found != expected:
        raise ValueError(f"{path}: not facenet-pytorch's {net} (parameters {found}, expected {expected})")
    # the files hold transposed (column-major) tensors; nn.Module.load_state_dict copies them into
    # row-major parameters, and the convolution and matmul kernels round differently on the two
    return {key: value.float().contiguous() for key, value in state.items()}


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


class MTCNN:
    """facenet-pytorch's ``MTCNN(keep_all=True, post_process=False)`` face detector, without torchvision.

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
        Where the networks run ("cpu", "cuda", "cuda:1", "mps"). The same results as facenet
        are guaranteed on CPU only.
    weights : Path, optional
        Folder with ``pnet.pt``, ``rnet.pt`` and ``onet.pt``; the facenet-pytorch wheel's if omitted.

    Notes
    -----
    Building one imports torch (≈ 2.5 s) and reads the weights (≈ 2 MB). ``detect`` keeps
    facenet's calling convention (``None`` for no face); ``find_faces`` is the plain one.
    """

    def __init__(
        self,
        min_face_size: float = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        select_largest: bool = True,
        device: Any = "cpu",
        weights: Path | None = None,
    ) -> None:
        import torch

        if not min_face_size > 0:
            raise ValueError(f"min_face_size must be > 0, got {min_face_size}")
        if len(thresholds) != 3:
            raise ValueError(f"thresholds must be three probabilities (PNet, RNet, ONet), got {thresholds!r}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.min_face_size = min_face_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.select_largest = bool(select_largest)
        self.device = torch.device(device)
        folder = weights or weights_dir()
        self._torch = torch
        self._params = {net: {k: v.to(self.device) for k, v in load_weights(net, folder).items()} for net in LAYERS}

    def __repr__(self) -> str:
        return (f"MTCNN(min_face_size={self.min_face_size}, thresholds={self.thresholds}, factor={self.factor}, "
                f"select_largest={self.select_largest}, device={str(self.device)!r})")

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
            RGB, values 0–255; all of one size. They go through the networks together.

        Returns
        -------
        list of Faces
            One per image (one for a single (H, W, 3) image), with empty arrays where there is
            no face; largest box first if ``select_largest``, else most probable first.
        """
        torch = self._torch
        with torch.inference_mode():
            pixels = _Pixels(torch, self._as_batch(images))
            boxes, image_inds = self._run(pixels)
        found = []
        for index in range(pixels.count):
            box = boxes[image_inds == index]
            if self.select_largest:
                box = box[np.argsort((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]))[::-1]]
            found.append(Faces(np.ascontiguousarray(box[:, :4]), np.ascontiguousarray(box[:, 4])))
        return found

    # ------------------------------------------------------------ the three stages (facenet's detect_face)

    def _as_batch(self, images: Any) -> Any:
        """(N, H, W, 3) tensor on the device, as facenet makes it."""
        torch = self._torch
        if isinstance(images, (np.ndarray, torch.Tensor)):
            batch = torch.as_tensor(images.copy() if isinstance(images, np.ndarray) else images, device=self.device)
            if batch.ndim == 3:
                batch = batch.unsqueeze(0)
        else:
            arrays = [np.asarray(image) for image in images]
            if not arrays:
                raise ValueError("no images given")
            if any(a.shape != arrays[0].shape for a in arrays):
                raise ValueError(f"a batch must hold images of one size, got {sorted({a.shape for a in arrays})}")
            batch = torch.as_tensor(np.stack(arrays), device=self.device)
        if batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"images must be RGB (H, W, 3) or (N, H, W, 3), got shape {tuple(batch.shape)}")
        return batch

    def _run(self, pixels: _Pixels) -> tuple[np.ndarray, np.ndarray]:
        """All images' faces: float32 (k, 5) rows ``x1, y1, x2, y2, prob``, and each row's image index."""
        torch = self._torch
        h, w = pixels.height, pixels.width
        scales = pyramid(h, w, self.min_face_size, self.factor)
        if not scales:
            return np.zeros((0, 5), np.float32), np.zeros(0, np.int64)

        # first stage: PNet over the pyramid, NMS within each scale, then across scales
        boxes, image_inds = [], []
        for scale in scales:
            im_data = _normalised(pixels.level(int(h * scale + 1), int(w * scale + 1)))
            reg, probs = _pnet(torch, self._params["pnet"], im_data)
            boxes_scale, inds_scale = _generate_bounding_box(torch, reg, probs[:, 1], scale, self.thresholds[0])
            pick = _batched_nms(torch, boxes_scale[:, :4], boxes_scale[:, 4], inds_scale, 0.5)
            boxes.append(boxes_scale[pick])
            image_inds.append(inds_scale[pick])
        boxes, image_inds = torch.cat(boxes, dim=0), torch.cat(image_inds, dim=0)
        pick = _batched_nms(torch, boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds = boxes[pick], image_inds[pick]
        regw = boxes[:, 2] - boxes[:, 0]
        regh = boxes[:, 3] - boxes[:, 1]
        qq1 = boxes[:, 0] + boxes[:, 5] * regw
        qq2 = boxes[:, 1] + boxes[:, 6] * regh
        qq3 = boxes[:, 2] + boxes[:, 7] * regw
        qq4 = boxes[:, 3] + boxes[:, 8] * regh
        boxes = _rerec(torch, torch.stack([qq1, qq2, qq3, qq4, boxes[:, 4]]).permute(1, 0))

        # second stage: RNet on 24×24 crops
        if len(boxes) > 0:
            boxes, image_inds, mv = self._refine(pixels, boxes, image_inds, _rnet, "rnet", 24, self.thresholds[1])
            pick = _batched_nms(torch, boxes[:, :4], boxes[:, 4], image_inds, 0.7)
            boxes, image_inds, mv = boxes[pick], image_inds[pick], mv[pick]
            boxes = _rerec(torch, _bbreg(torch, boxes, mv))

        # third stage: ONet on 48×48 crops, then NMS by intersection over the smaller box
        if len(boxes) > 0:
            boxes, image_inds, mv = self._refine(pixels, boxes, image_inds, _onet, "onet", 48, self.thresholds[2])
            boxes = _bbreg(torch, boxes, mv)
            pick = torch.as_tensor(_batched_nms_min(boxes[:, :4].cpu().numpy(), boxes[:, 4].cpu().numpy(), image_inds.cpu().numpy(), 0.7),
                                   device=boxes.device)
            boxes, image_inds = boxes[pick], image_inds[pick]
        return boxes[:, :5].cpu().numpy(), image_inds.cpu().numpy()

    def _refine(self, pixels: _Pixels, boxes: Any, image_inds: Any, net: Any, name: str, size: int,
                threshold: float) -> tuple[Any, Any, Any]:
        """Each box's crop (clipped to the image) resampled to ``size`` px, through ``net`` in
        facenet's chunks (boxes wholly outside the image are dropped first); the boxes whose
        face score passes ``threshold``, with that score as their 5th column, their image
        indices and their box regressions."""
        torch = self._torch
        y, ey, x, ex = _pad(boxes, pixels.width, pixels.height)
        inside = (ey > y - 1) & (ex > x - 1)
        if not inside.all():
            keep = torch.as_tensor(np.flatnonzero(inside), device=boxes.device)
            boxes, image_inds = boxes[keep], image_inds[keep]
            y, ey, x, ex = y[inside], ey[inside], x[inside], ex[inside]
        if len(boxes) == 0:
            return boxes[:, :5], image_inds, boxes.new_zeros((0, 4))
        im_data = _normalised(pixels.crops(image_inds.cpu().numpy(), y - 1, ey, x - 1, ex, size))
        outs = [net(torch, self._params[name], im_data[i:i + _CHUNK]) for i in range(0, len(im_data), _CHUNK)]
        regression, probs = (torch.cat(parts, dim=0) for parts in zip(*outs))
        score = probs[:, 1]
        ipass = score > threshold
        return torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1), image_inds[ipass], regression[ipass]


class _Pixels:
    """A batch's pixels, resampled as facenet's ``imresample`` does (torch's "area"
    interpolation: adaptive average pooling), in the memory layout torch's would have (the
    networks' rounding depends on it).

    For uint8 images on CPU the window sums come from integral images instead, ≈ 10× faster:
    they are integers below 2**24, so float32 holds them exactly whatever order torch adds
    them in, and torch then divides by the window's height, then its width, as done here.
    Otherwise (other dtypes, other devices, windows too large for exact sums) torch resamples.
    """

    def __init__(self, torch: Any, batch: Any) -> None:
        self._torch = torch
        self._batch = batch
        self.count, self.height, self.width = (int(n) for n in batch.shape[:3])
        self._floats = None
        self._integral = None
        if batch.device.type == "cpu" and batch.dtype == torch.uint8 and 255 * self.height * self.width < 2**31:
            self._integral = np.stack([cv2.integral(np.ascontiguousarray(image), sdepth=cv2.CV_32S) for image in batch.numpy()])

    @property
    def floats(self) -> Any:
        """facenet's image tensor: (N, 3, H, W) float32, a channels-last view."""
        if self._floats is None:
            self._floats = self._batch.permute(0, 3, 1, 2).type(self._torch.float32)
        return self._floats

    def level(self, height: int, width: int) -> Any:
        """The whole images resampled to ``height`` × ``width``: (N, 3, h, w), channels-last strides."""
        r0, r1 = _windows(0, self.height, height)
        c0, c1 = _windows(0, self.width, width)
        if not self._exact(r1 - r0, c1 - c0):
            return _imresample(self._torch, self.floats, (height, width))
        rows = np.take(self._integral, r1, axis=1) - np.take(self._integral, r0, axis=1)
        sums = (np.take(rows, c1, axis=2) - np.take(rows, c0, axis=2)).astype(np.float32)
        sums /= (r1 - r0).astype(np.float32)[:, None, None]
        sums /= (c1 - c0).astype(np.float32)[None, :, None]
        return self._torch.from_numpy(sums).permute(0, 3, 1, 2)

    def crops(self, image_inds: np.ndarray, top: np.ndarray, bottom: np.ndarray, left: np.ndarray, right: np.ndarray, size: int) -> Any:
        """Crops ``[top:bottom, left:right]`` of images ``image_inds`` resampled to ``size`` × ``size``:
        (K, 3, size, size), contiguous (as torch resamples a crop view)."""
        r0, r1 = _windows(top[:, None], (bottom - top)[:, None], size)
        c0, c1 = _windows(left[:, None], (right - left)[:, None], size)
        if not self._exact(r1 - r0, c1 - c0):
            floats = self.floats
            return self._torch.cat([_imresample(self._torch, floats[int(n), :, t:b, l:r].unsqueeze(0), (size, size))
                                    for n, t, b, l, r in zip(image_inds, top, bottom, left, right)], dim=0)
        heights, widths = (r1 - r0).astype(np.float32)[:, :, None, None], (c1 - c0).astype(np.float32)[:, None, :, None]
        # each window's four corners, from the flattened integral images (faster than 3-D fancy indexing)
        corners = self._integral.reshape(-1, 3)
        row_start = image_inds[:, None].astype(np.int64) * (self.height + 1)
        r0, r1 = ((row_start + r0) * (self.width + 1))[:, :, None], ((row_start + r1) * (self.width + 1))[:, :, None]
        c0, c1 = c0[:, None, :], c1[:, None, :]
        sums = ((np.take(corners, r1 + c1, axis=0) - np.take(corners, r0 + c1, axis=0))
                - (np.take(corners, r1 + c0, axis=0) - np.take(corners, r0 + c0, axis=0))).astype(np.float32)
        sums /= heights
        sums /= widths
        return self._torch.from_numpy(np.ascontiguousarray(sums.transpose(0, 3, 1, 2)))

    def _exact(self, heights: np.ndarray, widths: np.ndarray) -> bool:
        return self._integral is not None and 255 * int(heights.max()) * int(widths.max()) < 2**24


def _windows(start: Any, length: Any, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Torch's adaptive-pooling windows: output ``i`` of ``count`` averages
    ``[start + ⌊i·length/count⌋, start + ⌈(i+1)·length/count⌉)``."""
    i = np.arange(count, dtype=np.int64)
    length = np.asarray(length, dtype=np.int64)
    return start + i * length // count, start + ((i + 1) * length + count - 1) // count


def _is_batch(images: Any) -> bool:
    return isinstance(images, (list, tuple)) or getattr(images, "ndim", 0) == 4


# ---------------------------------------------------------------- networks (facenet's PNet, RNet, ONet)


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


# ---------------------------------------------------------------- boxes (facenet's helpers, same operations)


def _normalised(im_data: Any) -> Any:
    return (im_data - 127.5) * 0.0078125


def _imresample(torch: Any, img: Any, size: tuple[int, int]) -> Any:
    return torch.nn.functional.interpolate(img, size=size, mode="area")


def _generate_bounding_box(torch: Any, reg: Any, probs: Any, scale: float, thresh: float) -> tuple[Any, Any]:
    """PNet windows with probability ≥ ``thresh``: (k, 9) rows ``x1, y1, x2, y2, prob, 4 regressions``."""
    reg = reg.permute(1, 0, 2, 3)
    mask = probs >= thresh
    mask_inds = mask.nonzero()
    image_inds = mask_inds[:, 0]
    score = probs[mask]
    reg = reg[:, mask].permute(1, 0)
    bb = mask_inds[:, 1:].type(reg.dtype).flip(1)
    q1 = ((_PNET_STRIDE * bb + 1) / scale).floor()
    q2 = ((_PNET_STRIDE * bb + _PNET_CELL - 1 + 1) / scale).floor()
    return torch.cat([q1, q2, score.unsqueeze(1), reg], dim=1), image_inds


def _bbreg(torch: Any, boxes: Any, reg: Any) -> Any:
    """Apply regressions ``reg`` (k, 4) to ``boxes`` in place."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    b1 = boxes[:, 0] + reg[:, 0] * w
    b2 = boxes[:, 1] + reg[:, 1] * h
    b3 = boxes[:, 2] + reg[:, 2] * w
    b4 = boxes[:, 3] + reg[:, 3] * h
    boxes[:, :4] = torch.stack([b1, b2, b3, b4]).permute(1, 0)
    return boxes


def _rerec(torch: Any, boxes: Any) -> Any:
    """Make ``boxes`` square (side = the longer side, same centre), in place."""
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.max(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side.repeat(2, 1).permute(1, 0)
    return boxes


def _pad(boxes: Any, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """1-based inclusive crop bounds ``y, ey, x, ex`` (int32), truncated and clipped to the image."""
    boxes = boxes.trunc().int().cpu().numpy()
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


def _batched_nms(torch: Any, boxes: Any, scores: Any, image_inds: Any, threshold: float) -> Any:
    """torchvision's ``batched_nms`` as it runs on each image alone.

    It keeps the same boxes in the same order (which later stages' ties depend on): greedy NMS
    in score order, then, above 1000 boxes on CPU, torchvision's re-sort of the kept indices
    by ``Tensor.sort`` (not stable). Returns indices into ``boxes`` (long tensor), image by image.
    """
    if len(boxes) == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    all_boxes, all_scores, inds = boxes.cpu().numpy(), scores.cpu().numpy(), image_inds.cpu().numpy()
    vanilla_above = _NMS_VANILLA_ABOVE.get(boxes.device.type, _NMS_VANILLA_ABOVE_ELSEWHERE)
    keep = []
    for image in np.unique(inds):
        members = np.flatnonzero(inds == image)
        kept = members[_nms(all_boxes[members], all_scores[members], threshold)]
        if 4 * len(members) > vanilla_above:  # keep mask → indices ascending → Tensor.sort(descending=True)
            kept = np.sort(kept)
            kept = kept[torch.from_numpy(all_scores[kept]).sort(descending=True)[1].numpy()]
        keep.append(kept)
    return torch.as_tensor(np.concatenate(keep), device=boxes.device)


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
