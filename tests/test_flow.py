"""Flow between aligned crops (Farnebäck, TV-L1, DIS) against known displacement fields,
determinism across OpenCV thread counts, and optical strain on analytic fields (head-motion
compensation: ``test_flow_head_motion.py``)."""

from __future__ import annotations

import contextlib
import math

import cv2
import numpy as np
import pytest

from bench.flow_methods import bump_field, warp_forward
from helpers import place
from sammflow.flow import FlowField, FlowMethodUnavailable, compute_flow, head_motion, optical_strain, require_method
from sammflow.params import FLOW_METHODS, FlowParams, declared


@pytest.fixture(scope="module")
def crop(face_image: np.ndarray) -> np.ndarray:
    return cv2.resize(face_image[40:200, 150:300], (224, 224), interpolation=cv2.INTER_AREA)


def _interior(a: np.ndarray, border: int = 24) -> np.ndarray:
    return a[border:-border, border:-border]


@pytest.mark.parametrize("shift, direction", [((2.0, 0.0), 0.0), ((0.0, 2.0), 90.0), ((-1.5, -1.5), 225.0), ((1.0, -2.0), 296.57)])
def test_translation_gives_its_displacement_and_direction(crop, shift, direction):
    moved = place(crop, canvas=crop.shape, at=shift)
    flow = compute_flow(crop, moved)
    mean = _interior(flow.uv).reshape(-1, 2).mean(axis=0)
    # Farnebäck on a textured face: mean displacement within 0.2 px of the truth
    assert np.allclose(mean, shift, atol=0.2)
    angle = np.degrees(np.arctan2(mean[1], mean[0])) % 360
    assert min(abs(angle - direction), 360 - abs(angle - direction)) < 5


def test_local_motion_is_found_where_it_happens(crop):
    # a Gaussian bump moving pixels 2 px down around (150, 70), nothing elsewhere
    ys, xs = np.mgrid[0:224, 0:224].astype(np.float32)
    weight = np.exp(-((xs - 150) ** 2 + (ys - 70) ** 2) / (2 * 14.0**2))
    moved = cv2.remap(crop, xs, ys - 2.0 * weight.astype(np.float32), cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    flow = compute_flow(crop, moved)
    centre = flow.uv[64:77, 144:157].reshape(-1, 2).mean(axis=0)
    assert centre[1] > 1.2 and abs(centre[0]) < 0.4  # down
    far = flow.magnitude[150:210, 20:80]
    assert far.mean() < 0.1
    assert 80 < flow.angle[70, 150] < 100


def test_identical_frames_give_zero_flow(crop):
    flow = compute_flow(crop, crop)
    # zero wherever there is texture; Farnebäck's local fits are ill-posed in the few flat,
    # saturated pixels (≈ 0.4 % of this crop), where it returns small spurious vectors
    assert np.percentile(flow.magnitude, 95) < 1e-3
    assert (flow.magnitude > 0.05).mean() < 0.01
    assert flow.magnitude.mean() < 0.01


def test_flow_refuses_mismatched_or_colour_input(crop):
    with pytest.raises(ValueError, match="differ in shape"):
        compute_flow(crop, crop[:100])
    with pytest.raises(ValueError, match="grey uint8"):
        compute_flow(np.dstack([crop] * 3), crop)


def test_flow_parameters_matter(crop):
    moved = place(crop, canvas=crop.shape, at=(1.5, 0.5))
    a = compute_flow(crop, moved, params=FlowParams()).uv
    b = compute_flow(crop, moved, params=FlowParams(winsize=31, levels=1)).uv
    assert not np.allclose(a, b)


def test_small_window_border_artefacts_do_not_darken_the_map(crop):
    """Issue 10 item 13: at a small ``winsize`` Farnebäck's estimates at the crop's edge reach
    many times the real motion; with the original min-max brightness one of them set the scale
    and the map went nearly black. The default (robust) scale ignores them."""
    from sammflow.encode import encode_flow, map_scale
    from sammflow.params import EncodeParams

    ys, xs = np.mgrid[0:224, 0:224].astype(np.float32)
    weight = np.exp(-((xs - 80) ** 2 + (ys - 60) ** 2) / (2 * 14.0**2))
    moved = cv2.remap(crop, xs, ys + 2.0 * weight.astype(np.float32), cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)  # 2 px up
    flow = compute_flow(crop, moved, params=FlowParams(winsize=3))
    edge = np.ones((224, 224), bool)
    edge[14:-14, 14:-14] = False
    assert flow.magnitude[edge].max() > 4 * flow.magnitude[~edge].max()  # the artefact (measured 17.3 px against 3.6 px inside)
    values = {scale: cv2.cvtColor(encode_flow(flow, params=EncodeParams(scale=scale)), cv2.COLOR_BGR2HSV)[..., 2].astype(float)
              for scale in ("minmax", "robust")}
    bump = (slice(6, 9), slice(9, 11))  # around (60, 80) of the crop in the 28×28 map
    assert values["minmax"].mean() < 1.5 and values["minmax"][bump].max() < 40  # measured 0.9 and 26: nearly black
    assert values["robust"].mean() > 8 and values["robust"][bump].min() > 200  # measured 9.5 and 234: the motion shows
    assert 1.5 < map_scale(flow).full < 1.7  # measured 1.61 px: the real motion's scale


# ---------------------------------------------------------------- every method (farneback, tvl1, dis)


@contextlib.contextmanager
def opencv_threads(count: int):
    """OpenCV's thread count set to ``count`` inside, restored after."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


#: A smooth known motion of the crop (x, y, sigma, dx, dy; crop px): 2.5 px down-right at the
#: brow, 1.5 px left at the mouth, and a broad 1 px upward drift of the whole face.
SMOOTH_MOTION = ((150.0, 70.0, 18.0, 1.77, 1.77), (70.0, 160.0, 14.0, -1.5, 0.0), (112.0, 112.0, 60.0, 0.0, -1.0))
#: Measured end-point error (px) of each method's defaults on that motion: over the crop without
#: 16 px of border, and over the pixels that move more than 1.5 px (687 px moving 1.75 px on
#: average, on the forehead and the cheek: TV-L1 and DIS underestimate the peak of a motion on
#: skin this smooth more than Farnebäck does). The bounds are 1.5× these.
SMOOTH_EPE = {"farneback": (0.0913, 0.202), "tvl1": (0.0489, 0.344), "dis": (0.0905, 0.467)}


@pytest.fixture(scope="module")
def smooth_pair(crop) -> tuple[np.ndarray, np.ndarray]:
    """``crop`` with every pixel p moved to p + truth(p), and the truth (224, 224, 2), crop px."""
    truth = bump_field(SMOOTH_MOTION, size=224)
    return warp_forward(crop, truth), truth


@pytest.fixture(scope="module")
def smooth_flows(crop, smooth_pair) -> dict[str, np.ndarray]:
    """Each method's flow (default parameters, default threads) from ``crop`` to the moved crop, computed once."""
    moved, _ = smooth_pair
    return {method: compute_flow(crop, moved, params=FlowParams(method=method)).uv for method in FLOW_METHODS}


def _epe(uv: np.ndarray, truth: np.ndarray, border: int = 16) -> float:
    error = np.hypot(uv[..., 0] - truth[..., 0], uv[..., 1] - truth[..., 1])
    return float(error[border:-border, border:-border].mean())


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_each_method_recovers_a_smooth_displacement_field(smooth_pair, smooth_flows, method):
    _, truth = smooth_pair
    interior, moving = SMOOTH_EPE[method]
    epe = _epe(smooth_flows[method], truth)
    assert epe < 1.5 * interior, epe  # measured: farneback 0.091, tvl1 0.049, dis 0.091 px
    assert epe < 0.25 * _epe(np.zeros_like(truth), truth)  # zero flow would be off by 0.53 px
    fast = np.hypot(truth[..., 0], truth[..., 1]) > 1.5
    error = np.hypot(*(smooth_flows[method][fast] - truth[fast]).T).mean()
    assert error < 1.5 * moving, error  # measured: farneback 0.20, tvl1 0.34, dis 0.47 px, against 1.75 px of motion


#: (mean displacement error bound, EPE bound) for a 1.25, −0.75 px translation: 1.5× the measured
#: farneback (0.04, 0.09) px, EPE 0.151; tvl1 (0.006, 0.009), EPE 0.023; dis (0.051, 0.052), EPE 0.094.
TRANSLATION_BOUNDS = {"farneback": (0.14, 0.23), "tvl1": (0.015, 0.035), "dis": (0.08, 0.14)}


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_each_method_finds_a_sub_pixel_translation(crop, method):
    shift = (1.25, -0.75)
    flow = compute_flow(crop, place(crop, canvas=crop.shape, at=shift), params=FlowParams(method=method))
    mean_bound, epe_bound = TRANSLATION_BOUNDS[method]
    inner = flow.uv[16:-16, 16:-16].reshape(-1, 2)
    assert np.abs(inner.mean(axis=0) - shift).max() < mean_bound
    assert _epe(flow.uv, np.broadcast_to(np.float32(shift), flow.uv.shape)) < epe_bound


@pytest.mark.parametrize("method", ["tvl1", "dis"])
def test_identical_frames_give_zero_flow_with_tvl1_and_dis(crop, method):
    flow = compute_flow(crop, crop, params=FlowParams(method=method))
    assert flow.uv.dtype == np.float32 and flow.uv.shape == (224, 224, 2)
    assert flow.magnitude.max() < 1e-4  # measured exactly 0 for both


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_head_motion_is_subtracted_whatever_the_method(crop, smooth_pair, smooth_flows, method):
    moved, _ = smooth_pair
    compensated = compute_flow(crop, moved, params=FlowParams(method=method, head_motion=True)).uv
    plain = smooth_flows[method]
    assert np.abs(head_motion(plain)).max() > 0.3  # the broad drift reaches the nose: there is something to subtract
    np.testing.assert_array_equal(compensated, plain - head_motion(plain))


@pytest.mark.parametrize("params", [FlowParams(method="farneback"), FlowParams(method="tvl1"), FlowParams(method="dis"),
                                    FlowParams(method="dis", dis_spatial_propagation=False)], ids=["farneback", "tvl1", "dis",
                                                                                                 "dis-no-propagation"])
def test_flow_is_byte_identical_across_runs_and_thread_counts(crop, smooth_pair, smooth_flows, params):
    """Workers run OpenCV with one thread, the dashboard with all: the same crops must give the
    same bytes either way (DIS splits its work by thread count where spatial propagation is off)."""
    moved, _ = smooth_pair
    if params == FlowParams(method=params.method):
        reference = smooth_flows[params.method]  # an earlier run, with OpenCV's default thread count
    else:
        reference = compute_flow(crop, moved, params=params).uv
    assert np.abs(reference).max() > 1.0  # a real flow, not zeros
    for threads in (1, 3):
        with opencv_threads(threads):
            assert np.array_equal(compute_flow(crop, moved, params=params).uv, reference), threads


def test_tvl1_without_opencv_contrib_says_how_to_install_it(crop, monkeypatch):
    monkeypatch.delattr(cv2, "optflow")  # what plain opencv-python-headless looks like
    with pytest.raises(FlowMethodUnavailable, match="contrib") as error:
        compute_flow(crop, crop, params=FlowParams(method="tvl1"))
    assert isinstance(error.value, RuntimeError)
    message = str(error.value)
    assert "pip uninstall -y opencv-python-headless" in message and "pip install opencv-contrib-python-headless==4.14.0.94" in message
    assert "must not be installed together" in message
    with pytest.raises(FlowMethodUnavailable):
        require_method("tvl1")
    require_method("dis")  # the other methods are in every OpenCV build
    require_method("farneback")
    compute_flow(crop, crop, params=FlowParams(method="dis"))


#: Each TV-L1 parameter and the getter of OpenCV's object that reads it back.
TVL1_GETTERS = {"tvl1_tau": "getTau", "tvl1_lambda": "getLambda", "tvl1_theta": "getTheta", "tvl1_scales": "getScalesNumber",
                "tvl1_warps": "getWarpingsNumber", "tvl1_epsilon": "getEpsilon", "tvl1_inner_iterations": "getInnerIterations",
                "tvl1_outer_iterations": "getOuterIterations", "tvl1_scale_step": "getScaleStep", "tvl1_gamma": "getGamma",
                "tvl1_median_filtering": "getMedianFiltering"}
DIS_GETTERS = {"dis_finest_scale": "getFinestScale", "dis_patch_size": "getPatchSize", "dis_patch_stride": "getPatchStride",
               "dis_iterations": "getGradientDescentIterations", "dis_refine_iterations": "getVariationalRefinementIterations",
               "dis_refine_alpha": "getVariationalRefinementAlpha", "dis_refine_delta": "getVariationalRefinementDelta",
               "dis_refine_gamma": "getVariationalRefinementGamma", "dis_mean_normalization": "getUseMeanNormalization",
               "dis_spatial_propagation": "getUseSpatialPropagation"}


def _capture(monkeypatch, owner, name: str) -> list:
    """Replace ``owner.name`` (an OpenCV factory) by one that records the objects it makes."""
    made, factory = [], getattr(owner, name)
    monkeypatch.setattr(owner, name, lambda *args, **kwargs: made.append(factory(*args, **kwargs)) or made[-1])
    return made


@pytest.mark.parametrize("prefix, getters, owner, factory, values", [
    ("tvl1_", TVL1_GETTERS, "optflow", "DualTVL1OpticalFlow_create",
     dict(tvl1_tau=0.2, tvl1_lambda=0.3, tvl1_theta=0.5, tvl1_scales=2, tvl1_warps=2, tvl1_epsilon=0.05, tvl1_inner_iterations=7,
          tvl1_outer_iterations=3, tvl1_scale_step=0.6, tvl1_gamma=0.1, tvl1_median_filtering=3)),
    ("dis_", DIS_GETTERS, "", "DISOpticalFlow_create",
     dict(dis_finest_scale=0, dis_patch_size=6, dis_patch_stride=2, dis_iterations=9, dis_refine_iterations=2, dis_refine_alpha=11.0,
          dis_refine_delta=3.0, dis_refine_gamma=7.0, dis_mean_normalization=False, dis_spatial_propagation=False)),
])
def test_every_method_parameter_reaches_opencv(crop, monkeypatch, prefix, getters, owner, factory, values):
    assert sorted(getters) == sorted(f.name for f, _ in declared(FlowParams) if f.name.startswith(prefix))  # none forgotten
    made = _capture(monkeypatch, getattr(cv2, owner) if owner else cv2, factory)
    params = FlowParams(method=prefix.rstrip("_"), **values)
    small = np.ascontiguousarray(crop[::2, ::2])
    compute_flow(small, place(small, canvas=small.shape, at=(0.5, 0.0)), params=params)
    for name, getter in getters.items():
        assert getattr(made[0], getter)() == pytest.approx(getattr(params, name)), name


def test_dis_refuses_scales_its_crop_cannot_hold(crop):
    # 224 px crop, 16 px patches: OpenCV's coarsest DIS level is 2; finer than 3 it would silently
    # pick another patch size and scale than the ones recorded in params.json
    with pytest.raises(ValueError, match="dis_finest_scale 3 is coarser than the coarsest level DIS builds for a 224×224 crop"):
        compute_flow(crop, crop, params=FlowParams(method="dis", dis_finest_scale=3, dis_patch_size=16))
    compute_flow(crop, crop, params=FlowParams(method="dis", dis_finest_scale=2, dis_patch_size=16))
    compute_flow(crop, crop, params=FlowParams(method="dis", dis_finest_scale=3, dis_patch_size=8))


def test_dis_accepts_a_non_contiguous_crop(crop):
    wide = np.ascontiguousarray(np.hstack([crop, crop]))
    view = wide[:, :224]  # rows not adjacent in memory: OpenCV's DIS asserts continuous input
    assert not view.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(compute_flow(view, view, params=FlowParams(method="dis")).uv,
                                  compute_flow(crop, crop, params=FlowParams(method="dis")).uv)


# ---------------------------------------------------------------- optical strain


def _grid(h: int = 30, w: int = 41) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x = column, y = row), float64; not square, so swapped axes show."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return xs, ys


def _uv(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.dstack([u, v]).astype(np.float32)


@pytest.mark.parametrize("name, field, expected", [
    ("stretch along x", lambda x, y: (0.03 * x, 0 * y), 0.03),
    ("compression along x", lambda x, y: (-0.05 * x + 1.0, 0 * y), 0.05),
    ("stretch along y", lambda x, y: (0 * x, 0.04 * y), 0.04),
    ("pure shear", lambda x, y: (0.02 * y, 0.02 * x), 0.02 * math.sqrt(2)),
    ("simple shear", lambda x, y: (0.02 * y, 0 * x), 0.02 / math.sqrt(2)),
    ("rigid rotation", lambda x, y: (-0.01 * (y - 15), 0.01 * (x - 20)), 0.0),
    ("translation", lambda x, y: (1.5 + 0 * x, -0.7 + 0 * y), 0.0),
])
def test_optical_strain_of_analytic_fields(name, field, expected):
    # central differences (one-sided at the border) are exact on linear fields: the whole field, border included
    uv = _uv(*field(*_grid()))
    strain = optical_strain(uv)
    assert strain.dtype == np.float32 and strain.shape == (30, 41)
    np.testing.assert_allclose(strain, expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_strain_adds_stretch_and_shear_in_the_frobenius_norm():
    x, y = _grid()
    a, b, s = 0.03, -0.02, 0.01
    strain = optical_strain(_uv(a * x + s * y, b * y + s * x))  # u_x = a, v_y = b, u_y = v_x = s
    np.testing.assert_allclose(strain, math.sqrt(a**2 + b**2 + 0.5 * (2 * s) ** 2), rtol=1e-5)
    # a rotation added on top changes nothing: only the symmetric part counts
    np.testing.assert_allclose(optical_strain(_uv(a * x + s * y - 0.05 * y, b * y + s * x + 0.05 * x)), strain, rtol=1e-4, atol=1e-6)


def test_strain_is_central_differences_inside_and_one_sided_at_the_border():
    x, y = _grid(8, 9)
    u = 0.01 * x**2  # u_x = 0.02 x: exact by central differences inside; one-sided (0.01 (2x ± 1)) at the edges
    strain = optical_strain(_uv(u, 0 * y))
    np.testing.assert_allclose(strain[:, 1:-1], 0.02 * x[:, 1:-1], rtol=1e-5)
    np.testing.assert_allclose(strain[:, 0], 0.01, rtol=1e-5)
    np.testing.assert_allclose(strain[:, -1], 0.01 * (2 * 8 - 1), rtol=1e-5)


def test_flow_field_strain_and_refusals():
    x, y = _grid()
    uv = _uv(0.03 * x, 0 * y)
    np.testing.assert_array_equal(FlowField(uv).strain, optical_strain(uv))
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        optical_strain(uv[..., 0])
    with pytest.raises(ValueError, match="H, W >= 2"):
        optical_strain(uv[:1])
