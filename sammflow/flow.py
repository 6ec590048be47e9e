"""Dense optical flow between the aligned onset and apex crops, and its optical strain.

Methods (``FlowParams.method``), all OpenCV, all from the onset crop to the apex crop:

``farneback`` (default)
    ``cv2.calcOpticalFlowFarneback``: polynomial expansion; the original SAMM scripts.
``tvl1``
    Dual TV-L1 (``cv2.optflow.DualTVL1OpticalFlow_create``, opencv-contrib): what STSTNet,
    HTNet and OFF-ApexNet compute between onset and apex.
``dis``
    Dense Inverse Search (``cv2.DISOpticalFlow_create``, medium preset, then every ``dis_*``
    parameter): fast patch search with variational refinement.

Every method gives the same bytes for the same crops whatever OpenCV's thread count (a
worker runs with one thread, the dashboard with all): Farnebäck and TV-L1 split only
per-pixel work between threads, and DIS fixes its number of stripes (8) where spatial
propagation makes the stripes matter. ``tests/test_flow.py`` checks it.

Optical strain
--------------
``optical_strain`` is the magnitude of the infinitesimal strain tensor of the displacement
field ``(u, v)``::

    E = [[u_x,             ½(u_y + v_x)],
         [½(u_y + v_x),    v_y         ]]

    ε = ‖E‖_F = sqrt(u_x² + v_y² + ½ (u_y + v_x)²)

with x the columns (axis 1), y the rows (axis 0) and derivatives by central differences
(``np.gradient``: one-sided at the border), in crop px per px. ``E`` is the symmetric part
of the displacement gradient: it measures how the skin is stretched and sheared and is 0
for rigid motion; a translation has no gradient, and a small rotation by θ
(``u = −θ·y, v = θ·x``) has ``u_y = −θ``, ``v_x = θ``, so ``u_y + v_x = 0``. Head motion
left after alignment therefore leaves no strain, while facial muscles do. Central
differences are exact on linear fields: a stretch ``u = a·x`` gives ``|a|``, a pure shear
``u = s·y, v = s·x`` gives ``s·√2``, a simple shear ``u = s·y`` gives ``s/√2``.

Implementations in the micro-expression literature differ, and most papers do not say which
they use:

* Forward differences (``u − shift(u)``, the ``computeStrain`` of several public
  micro-expression repositories): same formula, exact on linear fields too, but half a pixel
  off-centre and noisier; a rotation still gives 0.
* Sobel derivatives (``cv2.Sobel``, ksize 3): 8× the derivative unless scaled by 1/8 (a
  factor that per-map min-max normalisation hides), and smoothed across the derivative's
  direction; a rotation still gives 0 inside, but not at the edge, where OpenCV's reflected
  border makes the derivative across it 0.
* ``¼(u_y + v_x)²`` instead of ``½``: counts the off-diagonal term once (not the Frobenius
  norm); a pure shear gives ``s`` instead of ``s·√2``; a rotation still gives 0.
* ``½(u_y² + v_x²)`` instead of ``½(u_y + v_x)²``: not a strain; a rotation by θ gives θ.
* Swapped axes (``u_x, u_y = np.gradient(u)``: numpy's first output is the derivative along
  the rows, i.e. ∂/∂y): a rotation by θ gives ``θ·√2``, a stretch ``u = a·x`` gives ``|a|/2``
  with ¼ or ``|a|/√2`` with ½.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sammflow.params import FlowParams, dis_coarsest_scale


class FlowMethodUnavailable(RuntimeError):
    """The installed OpenCV lacks the module a flow method needs (TV-L1: opencv-contrib)."""


#: What to run when ``cv2.optflow`` is missing: the contrib build replaces the plain one.
TVL1_INSTALL = ("pip uninstall -y opencv-python-headless && pip install opencv-contrib-python-headless==4.14.0.94 "
                "(the two must not be installed together: both own the cv2 module)")


@dataclass(frozen=True)
class FlowField:
    """A dense displacement field.

    Attributes
    ----------
    uv : ndarray, float32, shape (H, W, 2)
        Displacement in crop pixels from the first image to the second: ``uv[..., 0]`` along
        +x (right), ``uv[..., 1]`` along +y (down).
    """

    uv: np.ndarray

    def __post_init__(self) -> None:
        if self.uv.ndim != 3 or self.uv.shape[2] != 2:
            raise ValueError(f"flow must have shape (H, W, 2), got {self.uv.shape}")

    @property
    def magnitude(self) -> np.ndarray:
        """(H, W) float32, crop pixels."""
        return np.hypot(self.uv[..., 0], self.uv[..., 1])

    @property
    def angle(self) -> np.ndarray:
        """(H, W) float32 degrees in [0, 360): 0° = +x (right), 90° = +y (down)."""
        return np.degrees(np.arctan2(self.uv[..., 1], self.uv[..., 0])) % 360.0

    @property
    def strain(self) -> np.ndarray:
        """(H, W) float32 optical strain (``optical_strain``), crop px per px."""
        return optical_strain(self.uv)


def require_method(method: str) -> None:
    """Check that the installed OpenCV can run flow ``method`` (before a batch starts).

    Raises
    ------
    FlowMethodUnavailable
        ``tvl1`` without ``cv2.optflow`` (opencv-python-headless instead of the contrib build).
    """
    if method == "tvl1" and not hasattr(cv2, "optflow"):
        raise FlowMethodUnavailable(f"flow method tvl1 (Dual TV-L1) needs OpenCV's contrib build, which provides cv2.optflow; "
                                    f"this OpenCV {cv2.__version__} has no cv2.optflow. Install it: {TVL1_INSTALL}")


def compute_flow(onset: np.ndarray, apex: np.ndarray, *, params: FlowParams = FlowParams()) -> FlowField:
    """Dense optical flow from ``onset`` to ``apex`` by ``params.method``.

    Parameters
    ----------
    onset, apex : ndarray, uint8, shape (H, W)
        Aligned grey crops of the same shape.
    params : FlowParams
        The method and its parameters; ``head_motion`` subtracts the nose region's median
        flow whatever the method.

    Returns
    -------
    FlowField
        Where each onset pixel moved to in the apex crop, in crop pixels.

    Raises
    ------
    ValueError
        Crops not grey uint8 or of different shapes; DIS scales the crop cannot hold.
    FlowMethodUnavailable
        ``tvl1`` with an OpenCV without ``cv2.optflow``.
    """
    for name, image in (("onset", onset), ("apex", apex)):
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError(f"{name} must be a grey uint8 (H, W) array, got {image.dtype} {image.shape}")
    if onset.shape != apex.shape:
        raise ValueError(f"onset {onset.shape} and apex {apex.shape} crops differ in shape")
    uv = _METHODS[params.method](onset, apex, params)
    if params.head_motion:
        uv = uv - head_motion(uv)
    return FlowField(uv)


def _farneback(onset: np.ndarray, apex: np.ndarray, params: FlowParams) -> np.ndarray:
    return cv2.calcOpticalFlowFarneback(
        onset, apex, None,
        params.pyr_scale, params.levels, params.winsize, params.iterations,
        params.poly_n, params.poly_sigma, params.flags,
    )


def _tvl1(onset: np.ndarray, apex: np.ndarray, params: FlowParams) -> np.ndarray:
    require_method("tvl1")
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(
        tau=params.tvl1_tau, lambda_=params.tvl1_lambda, theta=params.tvl1_theta, nscales=params.tvl1_scales,
        warps=params.tvl1_warps, epsilon=params.tvl1_epsilon,
        innnerIterations=params.tvl1_inner_iterations,  # sic: OpenCV's spelling
        outerIterations=params.tvl1_outer_iterations, scaleStep=params.tvl1_scale_step, gamma=params.tvl1_gamma,
        medianFiltering=params.tvl1_median_filtering, useInitialFlow=False,
    )
    return tvl1.calc(np.ascontiguousarray(onset), np.ascontiguousarray(apex), None)


def _dis(onset: np.ndarray, apex: np.ndarray, params: FlowParams) -> np.ndarray:
    coarsest = dis_coarsest_scale(onset.shape, params.dis_patch_size)
    if params.dis_finest_scale > coarsest:
        # OpenCV would silently replace both the scale and the patch size: not the parameters recorded
        raise ValueError(f"dis_finest_scale {params.dis_finest_scale} is coarser than the coarsest level DIS builds for a "
                         f"{onset.shape[1]}×{onset.shape[0]} crop with {params.dis_patch_size} px patches ({coarsest}); "
                         f"use a dis_finest_scale of at most {coarsest} or smaller patches")
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(params.dis_finest_scale)
    dis.setPatchSize(params.dis_patch_size)
    dis.setPatchStride(params.dis_patch_stride)
    dis.setGradientDescentIterations(params.dis_iterations)
    dis.setVariationalRefinementIterations(params.dis_refine_iterations)
    dis.setVariationalRefinementAlpha(params.dis_refine_alpha)
    dis.setVariationalRefinementDelta(params.dis_refine_delta)
    dis.setVariationalRefinementGamma(params.dis_refine_gamma)
    dis.setUseMeanNormalization(params.dis_mean_normalization)
    dis.setUseSpatialPropagation(params.dis_spatial_propagation)
    return dis.calc(np.ascontiguousarray(onset), np.ascontiguousarray(apex), None)  # DIS asserts continuous input


#: The flow methods of ``FlowParams.method``.
_METHODS = {"farneback": _farneback, "tvl1": _tvl1, "dis": _dis}


def optical_strain(uv: np.ndarray) -> np.ndarray:
    """Optical strain of a displacement field: the Frobenius norm of its infinitesimal strain tensor.

    ``ε = sqrt(u_x² + v_y² + ½(u_y + v_x)²)``, derivatives by central differences
    (``np.gradient``, one-sided at the border), x = columns, y = rows (module docstring).

    Parameters
    ----------
    uv : ndarray, shape (H, W, 2)
        Displacement (u along +x, v along +y), crop px; H, W >= 2.

    Returns
    -------
    ndarray, float32, shape (H, W)
        Crop px per px (dimensionless); 0 for translation and rotation.
    """
    if uv.ndim != 3 or uv.shape[2] != 2 or min(uv.shape[:2]) < 2:
        raise ValueError(f"flow must have shape (H, W, 2) with H, W >= 2, got {uv.shape}")
    u, v = uv[..., 0].astype(np.float64), uv[..., 1].astype(np.float64)
    u_y, u_x = np.gradient(u)  # numpy's first axis is the rows: d/dy, then d/dx
    v_y, v_x = np.gradient(v)
    return np.sqrt(u_x**2 + v_y**2 + 0.5 * (u_y + v_x) ** 2).astype(np.float32)


#: The stable region used for head-motion compensation, as fractions of the crop (x1, y1, x2, y2):
#: the nose in an MTCNN face box, which no facial action unit moves much.
NOSE_REGION = (0.40, 0.42, 0.60, 0.62)


def head_motion(uv: np.ndarray, *, region: tuple[float, float, float, float] = NOSE_REGION) -> np.ndarray:
    """Median flow over ``region`` (fractions of the crop): the global head motion left after
    alignment, as SoftNet / MTSN estimate it from the nose.

    Returns
    -------
    ndarray, float32, shape (2,)
        ``(dx, dy)`` in crop pixels.
    """
    h, w = uv.shape[:2]
    x1, y1, x2, y2 = region
    patch = uv[int(y1 * h):max(int(y2 * h), int(y1 * h) + 1), int(x1 * w):max(int(x2 * w), int(x1 * w) + 1)]
    return np.median(patch.reshape(-1, 2), axis=0).astype(np.float32)
