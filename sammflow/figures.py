"""Figures of the dashboard, as plain functions: numpy images (PNG bytes, enlarged maps, colour
wheel, flow arrows, difference images, captioned panels, the alignment before/after figure),
flow statistics and plotly charts. No Streamlit: the pages call these, and a notebook can too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from sammflow.detect import FaceBox
from sammflow.encode import dominant_direction, encode_hsv
from sammflow.files import encode_image
from sammflow.flow import FlowField
from sammflow.params import AlignParams
from sammflow.pipeline import ClipFlow, NormalizedClip

#: SAMM's frame rate: converts frame counts to milliseconds.
SAMM_FPS = 200
#: Colours of the charts: the theme's primary colour, the "before" series, flagged frames.
ACCENT = "#1f5fa8"
BEFORE = "#e07b39"
FLAG = "#c0392b"


# ============================================================== figures (numpy → image)


def png(image: np.ndarray) -> bytes:
    """PNG bytes of an image, for download buttons.

    Parameters
    ----------
    image : ndarray, uint8, (H, W) grey or (H, W, 3) RGB

    Returns
    -------
    bytes
    """
    rgb_to_bgr = image[..., ::-1] if image.ndim == 3 else image
    return encode_image(np.ascontiguousarray(rgb_to_bgr))


def enlarge(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour upscale: a 28×28 map shows its real pixels, not a blur.

    Parameters
    ----------
    image : ndarray, uint8
    size : int
        Width in px; the height keeps the aspect ratio.

    Returns
    -------
    ndarray, uint8
    """
    height = round(image.shape[0] * size / image.shape[1])
    return cv2.resize(image, (size, height), interpolation=cv2.INTER_NEAREST)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Area-filtered resize to a square.

    Parameters
    ----------
    image : ndarray, uint8
    size : int

    Returns
    -------
    ndarray, uint8, (size, size[, 3])
    """
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def colour_wheel(size: int = 200) -> np.ndarray:
    """The legend of the HSV encoding: direction → hue, magnitude → brightness.

    Made by encoding a synthetic flow field ``uv = (x, y)`` with ``sammflow.encode.encode_hsv``
    itself, so the legend cannot drift from the maps. Labelled in image directions
    (0° = right, 90° = down).

    Returns
    -------
    ndarray, uint8, shape (size, size, 3), RGB
    """
    from PIL import Image, ImageDraw

    pad = max(30, int(size * 0.17))
    inner = size - 2 * pad
    ys, xs = np.mgrid[0:inner, 0:inner].astype(np.float32)
    u = (xs - (inner - 1) / 2) / ((inner - 1) / 2)
    v = (ys - (inner - 1) / 2) / ((inner - 1) / 2)
    radius = np.hypot(u, v)
    rgb = encode_hsv(FlowField(np.dstack([u, v]).astype(np.float32) * (radius <= 1.0)[..., None]))[..., ::-1].copy()
    rgb[radius > 1.0] = 255
    canvas = np.full((size, size, 3), 255, np.uint8)
    canvas[pad:pad + inner, pad:pad + inner] = rgb
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = _font(max(10, size // 19))
    c = size / 2
    side = pad / 2
    # words, not arrow glyphs (PIL's built-in font has none); two lines keep the sides narrow
    for text, (x, y), anchor in (("0°\nright", (size - side, c), "mm"), ("90° down", (c, size - 3), "md"),
                                 ("180°\nleft", (side, c), "mm"), ("270° up", (c, 3), "ma")):
        draw.multiline_text((x, y), text, fill=(40, 40, 40), font=font, anchor=anchor, align="center")
    return np.asarray(image)


def flow_arrows(image: np.ndarray, uv: np.ndarray, *, step: int = 14, scale: float = 4.0, upscale: int = 2,
                min_fraction: float = 0.15) -> np.ndarray:
    """Arrows of the flow drawn over a grey crop, coloured with the map's hue convention.

    Parameters
    ----------
    image : ndarray, uint8, (H, W)
        The crop the flow belongs to (the apex crop).
    uv : ndarray, float32, (H, W, 2)
        Flow in crop px.
    step : int
        Grid spacing of the arrows, crop px.
    scale : float
        Arrow length per px of flow (flows of a micro-expression are ~1 px).
    upscale : int
        Drawing resolution factor (thin, antialiased arrows).
    min_fraction : float
        Arrows shorter than this fraction of the largest flow are left out (noise).

    Returns
    -------
    ndarray, uint8, (H·upscale, W·upscale, 3), RGB
    """
    h, w = image.shape[:2]
    base = cv2.resize(image, (w * upscale, h * upscale), interpolation=cv2.INTER_CUBIC)
    canvas = cv2.cvtColor(base, cv2.COLOR_GRAY2RGB) if base.ndim == 2 else base.copy()
    canvas = (canvas * 0.8).astype(np.uint8)  # darken a little so coloured arrows stand out
    magnitude = np.hypot(uv[..., 0], uv[..., 1])
    peak = float(magnitude.max()) if magnitude.size else 0.0
    if peak <= 0:
        return canvas
    for y in range(step // 2, h, step):
        for x in range(step // 2, w, step):
            dx, dy = float(uv[y, x, 0]), float(uv[y, x, 1])
            if np.hypot(dx, dy) < min_fraction * peak:
                continue
            hue = round(float(np.degrees(np.arctan2(dy, dx))) % 360 / 2) % 180
            colour = cv2.cvtColor(np.uint8([[[hue, 255, 255]]]), cv2.COLOR_HSV2RGB)[0, 0].tolist()
            start = (int(x * upscale), int(y * upscale))
            end = (round((x + dx * scale) * upscale), round((y + dy * scale) * upscale))
            cv2.arrowedLine(canvas, start, end, colour, 2, cv2.LINE_AA, tipLength=0.35)
    return canvas


def difference(a: np.ndarray, b: np.ndarray, threshold: int) -> tuple[np.ndarray, float]:
    """Pixel-wise absolute difference of two crops, values below ``threshold`` hidden.

    Returns
    -------
    image : ndarray, uint8, (H, W, 3), RGB
        Black where ``|a - b| < threshold``, else an inferno colour of the difference.
    fraction : float
        Share of pixels at or above the threshold.
    """
    diff = cv2.absdiff(a, b)
    mask = diff >= threshold
    scaled = np.clip(diff.astype(np.float32) * 3.0, 0, 255).astype(np.uint8)  # micro-motion differences are small
    coloured = cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO)[..., ::-1]
    coloured[~mask] = 0
    return np.ascontiguousarray(coloured), float(mask.mean())


def mtcnn_crop(frame: np.ndarray, box: FaceBox, size: int) -> np.ndarray:
    """A frame cropped to its own MTCNN box and resized: the unaligned "before".

    Parameters
    ----------
    frame : ndarray, uint8, (H, W)
    box : FaceBox
    size : int

    Returns
    -------
    ndarray, uint8, (size, size)
    """
    return resize(frame[box.y1:box.y2, box.x1:box.x2], size)


def panel(tiles: Sequence[tuple[np.ndarray, str]], *, columns: int, tile: int = 224, title: str = "") -> np.ndarray:
    """Captioned tiles in a grid on white: the downloadable version of a page's figure.

    Parameters
    ----------
    tiles : sequence of (image, caption)
        uint8 grey or RGB images, any size (resized to fit ``tile``).
    columns : int
    title : str
        Printed above the grid.

    Returns
    -------
    ndarray, uint8, RGB
    """
    from PIL import Image, ImageDraw

    font = _font(13)
    head = 30 if title else 0
    label = 22
    gap = 10
    rows = max(1, -(-len(tiles) // columns))
    width = columns * tile + (columns + 1) * gap
    height = head + rows * (tile + label + gap) + gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((gap, 8), title, fill=(20, 20, 20), font=_font(16))
    for i, (image, text) in enumerate(tiles):
        r, c = divmod(i, columns)
        x = gap + c * (tile + gap)
        y = head + gap + r * (tile + label + gap)
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image
        scale = tile / max(rgb.shape[:2])
        interpolation = cv2.INTER_NEAREST if scale > 2 else cv2.INTER_AREA
        fitted = cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))), interpolation=interpolation)
        canvas.paste(Image.fromarray(fitted), (x, y))
        draw.text((x, y + fitted.shape[0] + 4), text, fill=(60, 60, 60), font=font)
    return np.asarray(canvas)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the small bitmap font
        return ImageFont.load_default()




def flow_stats(result: ClipFlow) -> dict[str, float]:
    """Summary numbers of a flow, shown beside the large map.

    Parameters
    ----------
    result : ClipFlow

    Returns
    -------
    dict of str → float
        ``mean`` and ``p99`` magnitude (crop px), ``direction`` (degrees, 0° = right,
        90° = down; nan without motion).
    """
    magnitude = result.flow.magnitude
    try:
        direction = dominant_direction(result.flow_map)
    except ValueError:
        direction = float("nan")
    return {"mean": float(magnitude.mean()), "p99": float(np.percentile(magnitude, 99)), "direction": direction}


@dataclass(frozen=True)
class PairFigure:
    """The before/after figure of the alignment diagnostics for frames ``a`` and ``b``."""

    before: tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]  # MTCNN crop a, b, difference
    after: tuple[np.ndarray, np.ndarray, np.ndarray]  # aligned crop a, b, difference
    before_fraction: float  # share of pixels differing by >= threshold (nan without MTCNN boxes)
    after_fraction: float

    def png(self, a: int, b: int, threshold: int, clip: str) -> bytes:
        """The figure as one captioned panel (before row, after row), PNG bytes for download."""
        size = self.after[0].shape[0]
        blank = np.full((size, size), 255, np.uint8)
        tiles = [
            (self.before[0] if self.before[0] is not None else blank, f"MTCNN crop, frame {a}"),
            (self.before[1] if self.before[1] is not None else blank, f"MTCNN crop, frame {b}"),
            (self.before[2] if self.before[2] is not None else blank, f"|difference| ≥ {threshold}: {self.before_fraction:.1%}"),
            (self.after[0], f"aligned, frame {a}"), (self.after[1], f"aligned, frame {b}"),
            (self.after[2], f"|difference| ≥ {threshold}: {self.after_fraction:.1%}"),
        ]
        return png(panel(tiles, columns=3, tile=size, title=f"{clip}: per-frame MTCNN crops (top) vs template-aligned crops (bottom)"))


def pair_figure(frames: Sequence[np.ndarray | None], boxes: Sequence[FaceBox | None], crops: Sequence[np.ndarray], threshold: int) -> PairFigure:
    """The before/after figure of the alignment diagnostics for two frames.

    Parameters
    ----------
    frames : (ndarray or None, ndarray or None)
        The two raw frames, uint8 (H, W); ``None`` where MTCNN found no face (not needed).
    boxes : (FaceBox or None, FaceBox or None)
        MTCNN's own box on each frame (the "before").
    crops : (ndarray, ndarray)
        The two template-aligned crops, uint8 (size, size) (the "after").
    threshold : int
        Grey levels below which a difference is hidden.

    Returns
    -------
    PairFigure
    """
    size = crops[0].shape[0]
    before = [mtcnn_crop(frame, box, size) if box is not None and frame is not None else None for frame, box in zip(frames, boxes)]
    if before[0] is not None and before[1] is not None:
        diff_before, fraction_before = difference(before[0], before[1], threshold)
    else:
        diff_before, fraction_before = None, float("nan")
    diff_after, fraction_after = difference(crops[0], crops[1], threshold)
    return PairFigure((before[0], before[1], diff_before), (crops[0], crops[1], diff_after), fraction_before, fraction_after)


# ============================================================== plotly helpers

#: Plotly config of every chart: the modebar's camera button downloads a 2× PNG.
PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def plotly_config(filename: str) -> dict[str, Any]:
    """Plotly config of every chart: the modebar's camera button downloads a 2× PNG.

    Parameters
    ----------
    filename : str
        Name of the downloaded file, without extension.

    Returns
    -------
    dict
    """
    return {**PLOTLY_CONFIG, "toImageButtonOptions": {**PLOTLY_CONFIG["toImageButtonOptions"], "filename": filename}}


def style(fig: Any, *, height: int = 320, title: str = "") -> Any:
    """The dashboard's common look for a plotly figure.

    Parameters
    ----------
    fig : plotly.graph_objects.Figure
    height : int
    title : str

    Returns
    -------
    plotly.graph_objects.Figure
        ``fig``, restyled.
    """
    fig.update_layout(template="plotly_white", height=height, margin={"l": 10, "r": 10, "t": 44 if title else 10, "b": 10},
                      title={"text": title, "font": {"size": 15}} if title else None,
                      legend={"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0},
                      font={"family": "Inter, Source Sans Pro, sans-serif", "size": 12})
    return fig


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

    counts = table[column].fillna("—").astype(str).value_counts().rename_axis(column).reset_index(name="clips")
    fig = px.bar(counts, x=column, y="clips", text="clips", color_discrete_sequence=[ACCENT])
    fig.update_traces(textposition="outside", cliponaxis=False)
    fig.update_xaxes(type="category", title=None)
    _count_axis(fig, int(counts["clips"].max()) if len(counts) else 1)
    return style(fig, title=title)


def histogram(table: Any, column: str, title: str, *, label: str) -> Any:
    """Histogram of a frame-count column in whole-frame bins.

    Parameters
    ----------
    table : pandas.DataFrame
    column : str
    title : str
    label : str
        What the column measures (axis and hover text).

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.express as px

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
    fig.update_xaxes(title=f"{label} (frames; 1 frame = {1000 / SAMM_FPS:g} ms at {SAMM_FPS} fps)")
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
        for number, label in ((onset, "onset"), (apex, "apex")):
            # label the top row only (plotly writes "new text" for an empty label)
            note = {"annotation_text": label, "annotation_position": "top"} if row == 1 else {}
            fig.add_vline(x=number, line={"color": "#999", "dash": "dot", "width": 1}, row=row, col=1, **note)
    for row, title in enumerate(("x offset (px)", "y offset (px)", "box width (px)"), start=1):
        fig.update_yaxes(title=title, row=row, col=1)
    fig.update_xaxes(title="frame", row=3, col=1)
    return style(fig, height=540, title="Face position per frame, relative to the apex box")


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
    fig.add_hline(y=params.min_score, line={"color": FLAG, "dash": "dash", "width": 1}, annotation_text=f"flag below {params.min_score:.2f}",
                  row=1, col=1)
    fig.add_hline(y=params.max_residual, line={"color": FLAG, "dash": "dash", "width": 1},
                  annotation_text=f"flag above {params.max_residual:.2f} px", row=2, col=1)
    fig.update_yaxes(title="correlation", range=[min(min(scores, default=1.0), params.min_score) - 0.02, 1.005], row=1, col=1)
    finite = [r for r in residuals if np.isfinite(r)]
    fig.update_yaxes(title="residual (crop px)", rangemode="tozero", range=[0, max([*finite, params.max_residual]) * 1.2], row=2, col=1)
    fig.update_xaxes(title="frame", row=2, col=1)
    return style(fig, height=420, title="Alignment quality per frame")
