"""features.npz (``export --arrays``): the contract models and other tools rely on, presets, resume."""

from __future__ import annotations

import io
import json
import zipfile

import cv2
import numpy as np
import pytest

from helpers import dataset, manifest, mtimes, params_json, run_cli
from sammflow.encode import flow_arrays, normalise_channels
from sammflow.export import export_flows, zip_outputs
from sammflow.features import KEYS, load_features
from sammflow.labels import loso_folds, megc_label
from sammflow.params import PipelineParams
from sammflow.pipeline import clip_flow

pytestmark = pytest.mark.slow  # whole exports


@pytest.fixture(scope="module")
def ststnet_export(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "OUT"
    code, _, err = run_cli("export", demo_root, out, "--preset", "ststnet", "--arrays", "-q", "-j", "1")
    assert code == 0, err
    return out


def test_npz_keys_shapes_and_dtypes_load_with_numpy_defaults(ststnet_export):
    rows = [r for r in manifest(ststnet_export) if r["status"] == "ok"]
    n = len(rows)
    assert n == 4
    with np.load(ststnet_export / "features.npz") as data:  # allow_pickle=False: no object arrays anywhere
        assert list(data.files) == list(KEYS)
        content = {key: data[key] for key in data.files}
    for key in ("u", "v", "strain"):
        assert content[key].dtype == np.float32 and content[key].shape == (n, 28, 28)
    assert content["X"].dtype == np.float32 and content["X"].shape == (n, 28, 28, 3)
    for key in ("subject", "clip", "dataset", "emotion", "objective_class", "action_units", "apex_source"):
        assert content[key].dtype.kind == "U" and content[key].shape == (n,), key
    for key in ("label_megc", "fold", "onset", "apex", "offset"):
        assert content[key].dtype == np.int64 and content[key].shape == (n,), key
    assert content["params"].shape == () and content["params"].dtype.kind == "U"


def test_npz_rows_follow_the_manifest_with_labels_and_folds(ststnet_export):
    rows = [r for r in manifest(ststnet_export) if r["status"] == "ok"]
    content = load_features(ststnet_export / "features.npz")
    assert list(content["clip"]) == [r["clip"] for r in rows]
    assert list(content["subject"]) == [r["subject"] for r in rows]
    assert list(content["emotion"]) == [r["emotion"] for r in rows]
    assert set(content["dataset"]) == {"samm"}
    assert list(content["label_megc"]) == [megc_label("samm", r["emotion"]) for r in rows]
    assert list(content["label_megc"]) == [int(r["label_megc"]) for r in rows]
    folds = loso_folds(r["subject"] for r in rows)
    assert list(content["fold"]) == [folds[s] for s in content["subject"]] == [int(r["fold"]) for r in rows]
    # leave-one-subject-out: one fold per subject, never two subjects in one fold
    assert len(set(zip(content["fold"], content["subject"]))) == len(set(content["subject"])) == len(set(content["fold"]))
    assert list(content["apex"]) == [int(r["apex"]) for r in rows]
    assert set(content["apex_source"]) == {"annotated"}


def test_x_is_each_map_min_max_normalised(ststnet_export):
    content = load_features(ststnet_export / "features.npz")
    x = content["X"]
    assert x.min() >= 0.0 and x.max() <= 1.0
    for i in range(len(x)):
        for c, key in enumerate(("u", "v", "strain")):
            channel = content[key][i]
            assert channel.max() > channel.min()  # the demo's clips all move
            assert x[i, ..., c].min() == 0.0 and x[i, ..., c].max() == pytest.approx(1.0, abs=1e-6)
            expected = (channel - channel.min()) / (channel.max() - channel.min())
            np.testing.assert_allclose(x[i, ..., c], expected, atol=1e-6)


def test_arrays_are_the_flow_of_the_clip_area_averaged_in_crop_pixels(demo_root, ststnet_export):
    params = PipelineParams.from_preset("ststnet")
    data = dataset(demo_root)
    content = load_features(ststnet_export / "features.npz")
    clip, frames = data.clip(str(content["clip"][0]))
    result = clip_flow(clip, frames, params=params)
    expected = flow_arrays(result.flow, params=params.encode)
    np.testing.assert_array_equal(content["u"][0], expected[0])
    np.testing.assert_array_equal(content["v"][0], expected[1])
    np.testing.assert_array_equal(content["strain"][0], expected[2])
    # area-averaged: the mean displacement over the crop is kept (crop px, not rescaled to the map size)
    assert content["u"][0].mean() == pytest.approx(float(result.flow.uv[..., 0].mean()), abs=1e-3)
    assert content["v"][0].mean() == pytest.approx(float(result.flow.uv[..., 1].mean()), abs=1e-3)


def test_ststnet_map_png_holds_u_v_strain_as_rgb(ststnet_export):
    content = load_features(ststnet_export / "features.npz")
    row = next(r for r in manifest(ststnet_export) if r["clip"] == content["clip"][0])
    bgr = cv2.imdecode(np.fromfile(ststnet_export / row["output"], np.uint8), cv2.IMREAD_COLOR)
    rgb = bgr[..., ::-1]
    expected = np.round(255 * normalise_channels(np.stack([content["u"][0], content["v"][0], content["strain"][0]])))
    np.testing.assert_array_equal(rgb, expected.astype(np.uint8))


def test_params_record_the_preset_and_every_value(ststnet_export):
    content = load_features(ststnet_export / "features.npz")
    record = json.loads(str(content["params"]))
    assert record["preset"] == "ststnet" and record["preset_changes"] == []
    assert record["params"]["flow"]["method"] == "tvl1" and record["params"]["encode"]["channels"] == "uvs"
    assert record["params_hash"] == PipelineParams.from_preset("ststnet").hash
    written = params_json(ststnet_export)
    assert written["preset"] == "ststnet" and written["params_hash"] == record["params_hash"]


def test_explicit_flags_override_the_preset_and_are_recorded(demo_root, tmp_path):
    out = tmp_path / "OUT"
    code, _, err = run_cli("export", demo_root, out, "--preset", "offapexnet", "--tvl1-warps", "3", "--map-size", "14", "-q", "-j", "1")
    assert code == 0, err
    written = params_json(out)
    assert written["preset"] == "offapexnet"
    assert written["preset_changes"] == ["flow.tvl1_warps", "encode.size"]
    assert written["params"]["flow"]["method"] == "tvl1" and written["params"]["flow"]["tvl1_warps"] == 3
    assert written["params"]["encode"] == {"size": 14, "interpolation": "area", "channels": "uv"}
    assert "pyr_scale" not in written["params"]["flow"]  # Farnebäck's parameters do not make TV-L1 outputs
    bgr = cv2.imdecode(np.fromfile(out / "flows" / manifest(out)[0]["output"].split("/")[-1], np.uint8), cv2.IMREAD_COLOR)
    assert bgr.shape == (14, 14, 3) and not bgr[..., 0].any()  # uv: blue (the third channel) is empty


def test_resume_keeps_clips_and_writes_the_same_npz(demo_root, tmp_path):
    out = tmp_path / "OUT"
    data = dataset(demo_root)
    export_flows(data, out, arrays=True)
    first = (out / "features.npz").read_bytes()
    before = mtimes(out)
    report = export_flows(data, out, arrays=True)
    assert report.resumed == 4
    after = mtimes(out)
    assert {k: v for k, v in after.items() if k.startswith(("flows/", "arrays/"))} == \
           {k: v for k, v in before.items() if k.startswith(("flows/", "arrays/"))}
    assert load_features(out / "features.npz").keys() == load_features(_bytes_file(tmp_path, first)).keys()
    np.testing.assert_array_equal(load_features(out / "features.npz")["X"], load_features(_bytes_file(tmp_path, first))["X"])


def _bytes_file(folder, data):
    path = folder / "first.npz"
    path.write_bytes(data)
    return path


def test_arrays_asked_later_recompute_the_clips_that_have_none(demo_root, tmp_path):
    out = tmp_path / "OUT"
    data = dataset(demo_root)
    export_flows(data, out)
    assert not (out / "features.npz").exists() and not (out / "arrays").exists()
    report = export_flows(data, out, arrays=True)
    assert report.resumed == 0
    assert len(load_features(out / "features.npz")["clip"]) == 4


def test_failed_clips_are_left_out_of_the_npz(demo_copy, tmp_path):
    data = dataset(demo_copy)  # its first clip loses its apex frame
    clip, frames = data.ready()[0]
    frames.path(clip.apex).unlink()
    out = tmp_path / "OUT"
    report = export_flows(dataset(demo_copy), out, arrays=True)
    assert [r["clip"] for r in report.failed] == [clip.clip]
    content = load_features(out / "features.npz")
    assert clip.clip not in set(content["clip"]) and len(content["clip"]) == 3


def test_zip_holds_the_npz(demo_root, tmp_path):
    report = export_flows(dataset(demo_root), tmp_path / "OUT", arrays=True)
    with zipfile.ZipFile(io.BytesIO(zip_outputs(report))) as archive:
        assert "features.npz" in archive.namelist()
