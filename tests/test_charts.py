"""Charts (``sammflow.charts``): the values each trace plots, thresholds, flags and layout."""

from __future__ import annotations

import numpy as np
import pytest

from sammflow import charts
from sammflow.align import Alignment, FrameMatch
from sammflow.detect import FaceBox
from sammflow.flow import FlowField
from sammflow.params import AlignParams
from sammflow.pipeline import NormalizedClip
from test_figures import clip_annotation


# ---------------------------------------------------------------- charts


@pytest.fixture()
def aligned() -> NormalizedClip:
    box = FaceBox(100, 50, 200, 170)  # 100 × 120, centre (150, 110)
    matches = {
        10: FrameMatch(dx=1.5, dy=-0.5, score=0.95, residual=0.05, scale=1.0),
        11: FrameMatch(dx=0.25, dy=2.0, score=0.70, residual=0.10, scale=1.02),
        12: FrameMatch(dx=0.0, dy=0.0, score=1.00, residual=0.00, scale=1.0),
        13: FrameMatch(dx=-1.0, dy=0.5, score=0.90, residual=0.35, scale=0.99),
    }
    return NormalizedClip(clip_annotation(10, 12, 13), {}, Alignment.from_matches(box, matches), ())


def test_jitter_chart_plots_mtcnn_boxes_against_the_alignment(aligned: NormalizedClip) -> None:
    track = {10: FaceBox(103, 48, 203, 168), 11: None, 12: FaceBox(100, 50, 200, 170), 13: FaceBox(96, 55, 206, 175)}
    fig = charts.jitter_chart(track, aligned, onset=10, apex=12)
    assert len(fig.data) == 6
    before, after = fig.data[:3], fig.data[3:]
    assert [t.name for t in fig.data] == ["MTCNN box per frame (before)"] * 3 + ["template-aligned crop (after)"] * 3
    assert [t.showlegend for t in fig.data] == [True, False, False, True, False, False]
    assert all(list(t.x) == [10, 12, 13] for t in before)  # no face on frame 11: no point
    assert list(before[0].y) == [3.0, 0.0, 1.0] and list(before[1].y) == [-2.0, 0.0, 5.0] and list(before[2].y) == [100, 100, 110]
    assert all(list(t.x) == [10, 11, 12, 13] for t in after)
    assert list(after[0].y) == [1.5, 0.25, 0.0, -1.0] and list(after[1].y) == [-0.5, 2.0, 0.0, 0.5]
    assert list(after[2].y) == pytest.approx([100.0, 102.0, 100.0, 99.0])  # box width × scale
    assert [t.yaxis for t in fig.data] == ["y", "y2", "y3"] * 2
    lines = [(s.x0, s.xref) for s in fig.layout.shapes]
    assert sorted(x for x, _ in lines) == [10, 10, 10, 12, 12, 12]  # onset and apex on each of the 3 rows
    assert sorted(a.text for a in fig.layout.annotations) == ["apex", "onset"]  # labelled on the top row only


def test_score_chart_shows_scores_residuals_thresholds_and_flags(aligned: NormalizedClip) -> None:
    params = AlignParams(min_score=0.8, max_residual=0.2)
    flagged = [int(n) for n in aligned.alignment.flagged(params)]
    assert flagged == [11, 13]  # score 0.70 < 0.8; residual 0.35 > 0.2
    fig = charts.score_chart(aligned, params, flagged)
    scores, residuals = fig.data
    assert list(scores.x) == [10, 11, 12, 13] and list(scores.y) == [0.95, 0.70, 1.00, 0.90]
    assert list(residuals.x) == [10, 11, 12, 13] and list(residuals.y) == [0.05, 0.10, 0.00, 0.35]
    for trace in (scores, residuals):
        assert list(trace.marker.color) == [charts.ACCENT, charts.FLAG, charts.ACCENT, charts.FLAG]
        assert list(trace.marker.size) == [5, 9, 5, 9]
    assert sorted(s.y0 for s in fig.layout.shapes) == [0.2, 0.8]
    assert sorted(a.text for a in fig.layout.annotations) == ["flag above<br>0.20 px", "flag below<br>0.80"]
    assert fig.layout.yaxis.range[0] == pytest.approx(0.70 - 0.02)  # the lowest score stays in view
    assert fig.layout.yaxis2.range[1] == pytest.approx(0.35 * 1.2)
    # another threshold only moves the line and the flags
    strict = AlignParams(min_score=0.99, max_residual=0.2)
    strict_fig = charts.score_chart(aligned, strict, aligned.alignment.flagged(strict))
    assert list(strict_fig.data[0].marker.color) == [charts.FLAG, charts.FLAG, charts.ACCENT, charts.FLAG]
    assert list(strict_fig.data[0].y) == list(scores.y)


def test_count_chart_and_histogram() -> None:
    import pandas as pd

    table = pd.DataFrame({"emotion": ["Anger", "Anger", "Other", None], "duration": [10, 12, 12, None]})
    bars = charts.count_chart(table, "emotion", "Emotion")
    assert list(bars.data[0].x) == ["Anger", "Other", "—"] and list(bars.data[0].y) == [2, 1, 1]
    hist = charts.histogram(table, "duration", "Duration", label="duration")
    assert sorted(hist.data[0].x) == [10, 12, 12] and hist.data[0].xbins.size == 1 and hist.data[0].xbins.start == 9.5
    assert hist.layout.yaxis.dtick == 1  # whole clips
    assert hist.layout.xaxis.title.text == "duration (frames; 1 frame = 5 ms at 200 fps)"  # SAMM's rate by default


def test_histogram_axis_says_the_kinds_frame_rate() -> None:
    import pandas as pd

    table = pd.DataFrame({"latency": [3, 5, None]})
    titles = [charts.histogram(table, "latency", "Latency", label="latency", fps=fps).layout.xaxis.title.text for fps in (100, 30, None)]
    assert titles == ["latency (frames; 1 frame = 10 ms at 100 fps)", "latency (frames; 1 frame = 33.3 ms at 30 fps)",
                      "latency (frames)"]  # None: a composite of datasets filmed at different rates
    empty = charts.histogram(pd.DataFrame({"latency": [None, None]}), "latency", "Latency", label="latency", fps=100)
    assert len(empty.data[0].x) == 0  # SMIC: no latency at all (no annotated apex)


def test_plotly_config_names_the_download_without_changing_the_default() -> None:
    config = charts.plotly_config("jitter_006_1_1")
    assert config["toImageButtonOptions"] == {"format": "png", "scale": 2, "filename": "jitter_006_1_1"}
    assert "filename" not in charts.PLOTLY_CONFIG["toImageButtonOptions"] and config["displaylogo"] is False


def test_plotly_config_downloads_a_2x_png_or_an_svg() -> None:
    """Issue 15: the sidebar's choice of what the camera button downloads; an SVG has no scale."""
    assert charts.plotly_config("u_006_1_1", image_format="png")["toImageButtonOptions"] == {"format": "png", "scale": 2,
                                                                                              "filename": "u_006_1_1"}
    svg = charts.plotly_config("u_006_1_1", image_format="svg")
    assert svg["toImageButtonOptions"] == {"format": "svg", "filename": "u_006_1_1"} and svg["displaylogo"] is False
    assert charts.PLOTLY_CONFIG["toImageButtonOptions"] == {"format": "png", "scale": 2}  # unchanged by either
    with pytest.raises(ValueError, match="must be one of png, svg, not 'jpeg'"):
        charts.plotly_config("u", image_format="jpeg")


# ---------------------------------------------------------------- chart layout (issue 10, item 18)


def test_chart_legends_sit_under_the_axis_titles_and_threshold_labels_beside_the_plot(aligned: NormalizedClip) -> None:
    track = {10: FaceBox(103, 48, 203, 168), 11: None, 12: FaceBox(100, 50, 200, 170), 13: FaceBox(96, 55, 206, 175)}
    jitter = charts.jitter_chart(track, aligned, onset=10, apex=12)
    params = AlignParams(min_score=0.8, max_residual=0.2)
    score = charts.score_chart(aligned, params, [11, 13])
    for fig in (jitter, score):
        legend = fig.layout.legend
        # pinned to the bottom edge of the figure, under the x tick labels and title, in a margin made for them
        assert fig.layout.showlegend is True and legend.orientation == "h"
        assert (legend.yref, legend.y, legend.yanchor, legend.x, legend.xanchor) == ("container", 0, "bottom", 0, "left")
        assert fig.layout.margin.b == charts.LEGEND_MARGIN == 84
    # the thresholds are labelled in the right margin, left-aligned beside their line's end: never over the data
    labels = {a.text: a for a in score.layout.annotations}
    assert set(labels) == {"flag below<br>0.80", "flag above<br>0.20 px"}
    for text, (xref, yref, y) in {"flag below<br>0.80": ("x domain", "y", 0.8), "flag above<br>0.20 px": ("x2 domain", "y2", 0.2)}.items():
        a = labels[text]
        assert (a.x, a.xref, a.xanchor, a.yref, a.y, a.yanchor) == (1, xref, "left", yref, y, "middle")
    assert score.layout.margin.r == charts.LABEL_MARGIN == 74
    # onset labelled left of its line, apex right of it: close lines never stack their labels
    sides = {a.text: (a.x, a.xanchor) for a in jitter.layout.annotations}
    assert sides == {"onset": (10, "right"), "apex": (12, "left")}
    # charts without a legend keep the small margin
    import pandas as pd

    bars = charts.count_chart(pd.DataFrame({"emotion": ["a", "b"]}), "emotion", "Emotion")
    assert bars.layout.margin.b == 10 and bars.layout.showlegend is False


# ---------------------------------------------------------------- motion curve and flow channels (issue 11)


def test_motion_chart_marks_onset_offset_and_both_apexes() -> None:
    curve = {10: 0.0, 11: 0.4, 12: 1.1, 13: 1.6, 14: 1.2, 15: 0.5}
    fig = charts.motion_chart(curve, 10, 15, apex=12, spotted=13)
    line, point = fig.data
    assert (line.name, list(line.x), list(line.y)) == ("motion from onset", [10, 11, 12, 13, 14, 15], [0.0, 0.4, 1.1, 1.6, 1.2, 0.5])
    assert (point.name, list(point.x), list(point.y)) == ("spotted apex", [13], [1.6])
    marks = {a.text: (a.x, a.xanchor) for a in fig.layout.annotations if a.text != fig.layout.title.text}
    # the earlier of the two apexes labelled to the left of its line, the later to the right
    assert marks == {"onset": (10, "right"), "offset": (15, "left"), "annotated apex": (12, "right"), "spotted apex": (13, "left")}
    assert sorted(s.x0 for s in fig.layout.shapes) == [10, 12, 13, 15]
    assert fig.layout.showlegend is True and fig.layout.yaxis.title.text == "motion (crop px)"


def test_motion_chart_without_a_spotted_or_an_annotated_apex() -> None:
    curve = {10: 0.0, 11: 0.4, 12: 1.1}
    plain = charts.motion_chart(curve, 10, 12, apex=11)
    assert len(plain.data) == 1 and plain.layout.showlegend is False
    assert sorted(s.x0 for s in plain.layout.shapes) == [10, 11, 12]
    unusable = charts.motion_chart(curve, 10, 12, apex=None, spotted=12)  # the file's apex was missing: spotted only
    assert sorted(s.x0 for s in unusable.layout.shapes) == [10, 12, 12]
    assert "annotated apex" not in {a.text for a in unusable.layout.annotations}


def test_channel_range_is_robust_and_symmetric_for_signed_channels() -> None:
    values = np.zeros((64, 64))
    values[8:56, 8:56] = np.linspace(-1.0, 2.0, 48)[None, :]
    values[0, 0] = 50.0  # a border artefact
    low, high = charts.channel_range(values, signed=True)
    assert low == -high and 1.9 < high <= 2.0  # the interior's 99th percentile of |value|, not the artefact
    assert charts.channel_range(np.abs(values), signed=False) == (0.0, pytest.approx(high))
    assert charts.channel_range(np.zeros((16, 16)), signed=False) == (0.0, 1e-6)  # no motion still has a colour range


def test_channel_charts_show_u_v_strain_and_magnitude_at_crop_resolution() -> None:
    ys, xs = np.mgrid[0:48, 0:40].astype(np.float32)
    field = FlowField(np.dstack([0.05 * xs, -0.02 * ys]).astype(np.float32))  # a stretch: strain everywhere
    figs = charts.channel_charts(field)
    assert len(figs) == 4
    expected = (field.uv[..., 0], field.uv[..., 1], field.strain, field.magnitude)
    for fig, values, (title, unit, signed) in zip(figs, expected, charts.CHANNELS):
        (heatmap,) = fig.data
        assert heatmap.type == "heatmap" and np.array_equal(np.asarray(heatmap.z), values) and np.asarray(heatmap.z).shape == (48, 40)
        assert (heatmap.zmin, heatmap.zmax) == charts.channel_range(values, signed=signed)
        assert heatmap.colorbar.title.text == unit and fig.layout.title.text == title
        assert fig.layout.yaxis.autorange == "reversed" and fig.layout.yaxis.scaleanchor == "x"  # image orientation, square pixels
    assert [fig.data[0].colorbar.title.text for fig in figs] == ["px", "px", "strain<br>(px/px)", "px"]
    assert figs[0].data[0].zmin == -figs[0].data[0].zmax and figs[3].data[0].zmin == 0.0
    assert np.allclose(np.asarray(figs[2].data[0].z)[10:-10, 10:-10], np.hypot(0.05, 0.02), atol=1e-5)  # sqrt(u_x² + v_y²)
