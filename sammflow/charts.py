"""Charts of the dashboard (plotly), as plain functions: the overview's counts and histograms,
the alignment page's face position, quality and facial motion per frame, the flow page's u,
v, strain and magnitude at crop resolution. No Streamlit: the pages call these, and a
notebook can too. Every chart downloads as a 2× PNG or an SVG from its modebar (``plotly_config``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from sammflow.detect import FaceBox
from sammflow.encode import interior
from sammflow.flow import FlowField
from sammflow.params import AlignParams
from sammflow.pipeline import NormalizedClip

#: SAMM's frame rate: converts frame counts to milliseconds (the default of ``histogram``).
SAMM_FPS = 200
#: Colours of the charts: the theme's primary colour, the "before" series, flagged frames.
ACCENT = "#1f5fa8"
BEFORE = "#e07b39"
FLAG = "#c0392b"


#: The formats the camera button can download, and their options: a PNG at twice the chart's
#: size on screen, or an SVG (vector: sharp at any size, editable; a scale means nothing to it).
IMAGE_FORMATS = {"png": {"format": "png", "scale": 2}, "svg": {"format": "svg"}}
#: Plotly config of every chart: the modebar's camera button downloads a 2× PNG (the default format).
PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": dict(IMAGE_FORMATS["png"])}


def plotly_config(filename: str, *, image_format: str = "png") -> dict[str, Any]:
    """Plotly config of every chart: the modebar's camera button downloads the chart as a 2× PNG
    or as an SVG.

    Parameters
    ----------
    filename : str
        Name of the downloaded file, without extension.
    image_format : {"png", "svg"}
        ``IMAGE_FORMATS``: the dashboard's sidebar choice.

    Returns
    -------
    dict

    Raises
    ------
    ValueError
        Another format.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"chart image format must be one of {', '.join(IMAGE_FORMATS)}, not {image_format!r}")
    return {**PLOTLY_CONFIG, "toImageButtonOptions": {**IMAGE_FORMATS[image_format], "filename": filename}}


#: Height (px) of the bottom margin that holds the x tick labels, the x axis title and, below
#: them, a one-row legend (pinned to the bottom of the figure, so it never reaches the title).
LEGEND_MARGIN = 84
#: Width (px) of the right margin that holds the threshold labels (outside the data).
LABEL_MARGIN = 74


def _white_template() -> None:
    """Make plotly's "plotly_white" the template of the figures made from now on (once, when
    the first chart is drawn; plotly is imported only then). Assigning it to each figure
    (``update_layout(template=...)``) copied and validated the whole template, ≈ 30 ms a
    figure, a third of the flow page's rerun."""
    import plotly.io as pio

    if pio.templates.default != "plotly_white":
        pio.templates.default = "plotly_white"


def style(fig: Any, *, height: int = 320, title: str = "", legend: bool = False, right: int = 10) -> Any:
    """The dashboard's common look for a plotly figure.

    Parameters
    ----------
    fig : plotly.graph_objects.Figure
    height : int
    title : str
    legend : bool
        Show the legend: one horizontal row at the bottom of the figure (``yref="container"``,
        ``y=0``), under the x axis title, in a bottom margin of ``LEGEND_MARGIN`` px.
    right : int
        Right margin, px (``LABEL_MARGIN`` for labels outside the plot).

    Returns
    -------
    plotly.graph_objects.Figure
        ``fig``, restyled.
    """
    fig.update_layout(**_layout(height=height, title=title, legend=legend, right=right))
    return fig


def _layout(*, height: int, title: str, legend: bool, right: int) -> dict[str, Any]:
    """``style``'s layout properties."""
    return {"height": height, "margin": {"l": 10, "r": right, "t": 44 if title else 10, "b": LEGEND_MARGIN if legend else 10},
            "title": {"text": title, "font": {"size": 15}} if title else None, "showlegend": legend,
            "legend": {"orientation": "h", "yref": "container", "yanchor": "bottom", "y": 0, "xanchor": "left", "x": 0},
            "font": {"family": "Inter, Source Sans Pro, sans-serif", "size": 12}}


def count_chart(table: Any, column: str, title: str) -> Any:
    """Bar chart of how many rows have each value of a column, most frequent first.

    Parameters
    ----------
    table : pandas.DataFrame
    column : str
    title : str

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.express as px

    _white_template()

    counts = table[column].fillna("—").astype(str).value_counts().rename_axis(column).reset_index(name="clips")
    fig = px.bar(counts, x=column, y="clips", text="clips", color_discrete_sequence=[ACCENT])
    fig.update_traces(textposition="outside", cliponaxis=False)
    fig.update_xaxes(type="category", title=None)
    _count_axis(fig, int(counts["clips"].max()) if len(counts) else 1)
    return style(fig, title=title)


def histogram(table: Any, column: str, title: str, *, label: str, fps: float | None = SAMM_FPS) -> Any:
    """Histogram of a frame-count column in whole-frame bins.

    Parameters
    ----------
    table : pandas.DataFrame
    column : str
    title : str
    label : str
        What the column measures (axis and hover text).
    fps : float or None
        The clips' frame rate (``sammflow.kinds.Kind.fps``), for the axis title's ms per frame;
        ``None``: not one (a composite of datasets filmed at different rates), frames only.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.express as px

    _white_template()

    values = table[[column]].dropna().astype(int)
    fig = px.histogram(values, x=column, color_discrete_sequence=[ACCENT])
    peak = 1
    if len(values):
        low, high = int(values[column].min()), int(values[column].max())
        width = max(1, -(-(high - low + 1) // 30))  # whole frames per bin, at most ~30 bins
        fig.update_traces(xbins={"start": low - 0.5, "end": high + 0.5, "size": width})
        peak = int(np.histogram(values[column], bins=np.arange(low - 0.5, high + width + 0.5, width))[0].max())
        if high - low < 12:
            fig.update_xaxes(dtick=width)
    fig.update_traces(hovertemplate=f"{label}: %{{x}} frames<br>clips: %{{y}}<extra></extra>", marker_line={"width": 1, "color": "white"})
    rate = f"; 1 frame = {1000 / fps:.3g} ms at {fps:g} fps" if fps else ""
    fig.update_xaxes(title=f"{label} (frames{rate})")
    _count_axis(fig, peak)
    return style(fig, title=title)


def _count_axis(fig: Any, peak: int) -> None:
    """A y axis of whole clip counts (plotly would tick 0.5 on a small chart)."""
    step = max(1, -(-peak // 5))
    fig.update_yaxes(title="clips", rangemode="tozero", tick0=0, dtick=step, range=[0, peak * 1.15 + 0.1])


def jitter_chart(track: dict[int, FaceBox | None], aligned: NormalizedClip, onset: int, apex: int) -> Any:
    """Per-frame face position before and after alignment, relative to the apex box (frame px).

    "Before" is MTCNN's own box on each frame; "after" is the apex box moved by the template
    match. Three rows: x offset, y offset, box width.

    Parameters
    ----------
    track : dict of int → FaceBox or None
        From ``mtcnn_boxes``.
    aligned : NormalizedClip
        Every frame of the clip (only its ``alignment`` is used).
    onset, apex : int
        Marked with dotted lines.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go

    _white_template()
    from plotly.subplots import make_subplots

    alignment = aligned.alignment
    box = alignment.box
    cx, cy = box.center
    frames = [int(n) for n in alignment.frames]
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.05)
    before = [(n, track.get(n)) for n in frames]
    series = {
        "MTCNN box per frame (before)": (
            [n for n, b in before if b], [[b.center[0] - cx for _, b in before if b], [b.center[1] - cy for _, b in before if b],
                                          [b.width for _, b in before if b]], BEFORE),
        "template-aligned crop (after)": (
            frames, [alignment.offsets[:, 0].tolist(), alignment.offsets[:, 1].tolist(), (box.width * alignment.scales).tolist()], ACCENT),
    }
    for name, (xs, columns, colour) in series.items():
        for row, ys in enumerate(columns, start=1):
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, legendgroup=name, showlegend=row == 1,
                                     line={"color": colour, "width": 2}, marker={"size": 5}), row=row, col=1)
    for row in (1, 2, 3):
        for number, label, side in ((onset, "onset", "top left"), (apex, "apex", "top right")):
            # label the top row only (plotly writes "new text" for an empty label), above the plot,
            # onset to the left of its line and apex to the right: close lines keep apart labels
            note = {"annotation_text": label, "annotation_position": side} if row == 1 else {}
            fig.add_vline(x=number, line={"color": "#999", "dash": "dot", "width": 1}, row=row, col=1, **note)
    for row, title in enumerate(("x offset (px)", "y offset (px)", "box width (px)"), start=1):
        fig.update_yaxes(title=title, row=row, col=1)
    fig.update_xaxes(title="frame", row=3, col=1)
    return style(fig, height=560, title="Face position per frame, relative to the apex box", legend=True)


def score_chart(aligned: NormalizedClip, params: AlignParams, flagged: Iterable[int]) -> Any:
    """Per-frame alignment quality: match score (normalised correlation with the apex crop)
    and residual-shift estimate (crop px), each with its flag threshold.

    Parameters
    ----------
    aligned : NormalizedClip
        Only its ``alignment`` is used.
    params : AlignParams
        ``min_score`` and ``max_residual`` are drawn as the thresholds.
    flagged : iterable of int
        Frames drawn in red.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go

    _white_template()
    from plotly.subplots import make_subplots

    frames = [int(n) for n in aligned.alignment.frames]
    bad = {int(n) for n in flagged}
    marker = {"size": [9 if n in bad else 5 for n in frames], "color": [FLAG if n in bad else ACCENT for n in frames]}
    scores = aligned.alignment.scores.tolist()
    residuals = aligned.alignment.residuals.tolist()
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    fig.add_trace(go.Scatter(x=frames, y=scores, mode="lines+markers", name="match score", line={"color": ACCENT, "width": 2},
                             marker=marker), row=1, col=1)
    fig.add_trace(go.Scatter(x=frames, y=residuals, mode="lines+markers", name="residual shift (crop px)",
                             line={"color": BEFORE, "width": 2}, marker=marker), row=2, col=1)
    # threshold labels in the right margin, beside their line: never over the data
    for value, text, row in ((params.min_score, f"flag below<br>{params.min_score:.2f}", 1),
                             (params.max_residual, f"flag above<br>{params.max_residual:.2f} px", 2)):
        fig.add_hline(y=value, line={"color": FLAG, "dash": "dash", "width": 1}, annotation_text=text, annotation_position="right",
                      annotation_font={"color": FLAG, "size": 11}, annotation_align="left", row=row, col=1)
    fig.update_yaxes(title="correlation", range=[min(min(scores, default=1.0), params.min_score) - 0.02, 1.005], row=1, col=1)
    finite = [r for r in residuals if np.isfinite(r)]
    fig.update_yaxes(title="residual (crop px)", rangemode="tozero", range=[0, max([*finite, params.max_residual]) * 1.2], row=2, col=1)
    fig.update_xaxes(title="frame", row=2, col=1)
    return style(fig, height=440, title="Alignment quality per frame", legend=True, right=LABEL_MARGIN)


def motion_chart(curve: Mapping[int, float], onset: int, offset: int, *, apex: int | None, spotted: int | None = None) -> Any:
    """Facial motion from the onset, frame by frame (``sammflow.spot.motion_curve``), with the
    annotated apex and, if there is one, the spotted apex marked.

    Parameters
    ----------
    curve : mapping of frame number → float
        Crop px.
    onset, offset : int
        Marked with dotted lines.
    apex : int or None
        The annotated apex, a dashed line (``None``: the annotation has no usable apex).
    spotted : int, optional
        The spotted apex (the curve's smoothed peak), a solid line and a marker on the curve.

    Returns
    -------
    plotly.graph_objects.Figure
        One trace, "motion from onset"; with ``spotted``, a second one, the spotted apex's point.
    """
    import plotly.graph_objects as go

    _white_template()

    frames = sorted(int(n) for n in curve)
    values = [float(curve[n]) for n in frames]
    fig = go.Figure(go.Scatter(x=frames, y=values, mode="lines+markers", name="motion from onset", line={"color": ACCENT, "width": 2},
                               marker={"size": 5}, hovertemplate="frame %{x}<br>%{y:.3f} px<extra></extra>"))
    lines = [(onset, "onset", "#999", "dot", "top left"), (offset, "offset", "#999", "dot", "top right")]
    if apex is not None:  # labels of close lines kept apart: the earlier to the left
        lines.append((apex, "annotated apex", BEFORE, "dash", "top left" if spotted is not None and spotted > apex else "top right"))
    if spotted is not None:
        lines.append((spotted, "spotted apex", FLAG, "solid", "top right" if apex is None or spotted >= apex else "top left"))
        fig.add_trace(go.Scatter(x=[spotted], y=[float(curve[spotted])] if spotted in curve else [None], mode="markers",
                                 name="spotted apex", marker={"size": 11, "color": FLAG, "symbol": "diamond"},
                                 hovertemplate="spotted apex: frame %{x}<extra></extra>"))
    for number, label, colour, dash, side in lines:
        fig.add_vline(x=number, line={"color": colour, "dash": dash, "width": 1.5}, annotation_text=label,
                      annotation_position=side, annotation_font={"color": colour, "size": 11})
    fig.update_xaxes(title="frame")
    fig.update_yaxes(title="motion (crop px)", rangemode="tozero")
    return style(fig, height=340, title="Facial motion from the onset (top 10 % of the flow magnitude)", legend=spotted is not None)


#: The channels of ``channel_charts``: title, colour-bar title, diverging (signed, centred on 0).
CHANNELS = (("u: horizontal flow (+ right)", "px", True), ("v: vertical flow (+ down)", "px", True),
            ("optical strain", "strain<br>(px/px)", False), ("magnitude", "px", False))
#: The share of the interior's values inside a chart's colour range (the rest saturate).
COLOUR_PERCENTILE = 99.0


def channel_range(values: np.ndarray, *, signed: bool) -> tuple[float, float]:
    """The colour range of a channel: the 99th percentile of its (absolute) values over the
    interior (``sammflow.encode.interior``, as the maps' robust scale), so a border artefact
    of the flow cannot wash out the face; symmetric about 0 for a signed channel.

    Parameters
    ----------
    values : ndarray, (H, W)
    signed : bool

    Returns
    -------
    (float, float)
        ``(-r, r)`` or ``(0, r)``; ``r`` is at least 1e-6 (a field of zeros has a range).
    """
    inner = np.abs(interior(np.asarray(values, np.float64)))
    top = float(np.percentile(inner, COLOUR_PERCENTILE)) if inner.size else 0.0
    if not top > 0:
        top = float(inner.max()) if inner.size else 0.0
    top = max(top, 1e-6)
    return (-top, top) if signed else (0.0, top)


def channel_chart(values: np.ndarray, title: str, unit: str, *, signed: bool, height: int = 330) -> Any:
    """One channel of a flow as a heatmap at its own resolution, image orientation (row 0 at
    the top), with a colour bar.

    Parameters
    ----------
    values : ndarray, (H, W)
    title : str
    unit : str
        The colour bar's title.
    signed : bool
        A diverging colour scale centred on 0 (u, v), else a sequential one from 0.

    Returns
    -------
    plotly.graph_objects.Figure
        One ``Heatmap`` trace: ``z`` the values (float32), ``zmin``/``zmax`` from
        ``channel_range``; values beyond saturate, the hover shows the true value.
    """
    import plotly.graph_objects as go

    _white_template()

    low, high = channel_range(values, signed=signed)
    z = np.asarray(values, np.float32)
    # one validated dict: ≈ 6× faster than a Heatmap object restyled by update_* calls (each validates again)
    heatmap = {"type": "heatmap", "z": z, "zmin": low, "zmax": high, "colorscale": "RdBu_r" if signed else "Viridis",
               "colorbar": {"title": {"text": unit}, "thickness": 12}, "hovertemplate": "x %{x}, y %{y}<br>%{z:.3f}<extra></extra>"}
    axes = {"yaxis": {"autorange": "reversed", "scaleanchor": "x", "constrain": "domain", "showticklabels": False},
            "xaxis": {"constrain": "domain", "showticklabels": False}}
    return go.Figure({"data": [heatmap], "layout": {**axes, **_layout(height=height, title=title, legend=False, right=10)}})


def channel_charts(flow: FlowField) -> list[Any]:
    """The u, v, optical strain and magnitude of a flow at crop resolution: four heatmaps
    (``channel_chart``), in ``CHANNELS`` order.

    Parameters
    ----------
    flow : FlowField
        (H, W) crop flow, crop px.

    Returns
    -------
    list of plotly.graph_objects.Figure
        u and v (px, diverging), strain (px per px: dimensionless) and magnitude (px).
    """
    fields = (flow.uv[..., 0], flow.uv[..., 1], flow.strain, flow.magnitude)
    return [channel_chart(values, title, unit, signed=signed) for values, (title, unit, signed) in zip(fields, CHANNELS)]


def confusion_chart(matrix: Any, classes: Iterable[str], title: str = "", *, height: int = 300) -> Any:
    """A confusion matrix (rows true class, columns predicted; counts) as an annotated heatmap."""
    import plotly.graph_objects as go

    _white_template()
    names = list(classes)
    z = np.asarray(matrix, np.int64)
    heatmap = {"type": "heatmap", "z": z, "x": names, "y": names, "colorscale": "Blues", "showscale": False,
               "text": z, "texttemplate": "%{text}", "hovertemplate": "true %{y}, predicted %{x}: %{z}<extra></extra>"}
    axes = {"xaxis": {"title": {"text": "predicted"}, "side": "bottom"},
            "yaxis": {"title": {"text": "true"}, "autorange": "reversed", "scaleanchor": "x"}}
    return go.Figure({"data": [heatmap], "layout": {**axes, **_layout(height=height, title=title, legend=False, right=10)}})
