"""Figures of the dashboard, as plain functions: numpy images (PNG bytes, enlarged maps, colour
wheel with the brightness scale, the legend of a map of any channels, flow arrows, difference
images, captioned panels, the alignment before/after figure, the slide figure of a clip) and
flow statistics; the plotly charts are in
``sammflow.charts``. No Streamlit: the pages call these, and a notebook can too.

All text drawn into an image goes through ``sammflow.animate.drawable`` (Pillow's built-in
font has no →, ×, ≥: they become "->", "x", ">="), so a downloaded figure never shows an
empty box, offline.

On screen a figure is drawn at ``scale=1``; a page's download draws it again at
``DOWNLOAD_SCALE`` (tiles, gaps, lines and text all doubled: a slide-ready PNG whose captions
stay readable on a projector), and a single flow map downloads enlarged (``map_png``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from sammflow.animate import drawable, label_frame, text_font
from sammflow.detect import FaceBox
from sammflow.encode import MapScale, dominant_direction, encode_flow, encode_hsv, flow_arrays, map_scale
from sammflow.files import encode_image
from sammflow.flow import FlowField
from sammflow.params import EncodeParams
from sammflow.pipeline import ClipFlow

#: Drawing scale of every downloaded figure: twice the on-screen layout (tiles, gaps, line
#: widths, font sizes), for slides.
DOWNLOAD_SCALE = 2
#: Side (px, at least) of a downloaded flow map: a 28×28 map is enlarged 16×, each of its pixels
#: an exact square of pixels (``map_png``).
MAP_PNG_SIDE = 448

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


def map_slide_name(file_name: str) -> str:
    """The file name of a map's slide version (``map_png``): ``sub006_006_1_2.png`` →
    ``sub006_006_1_2_448px.png``, never the map's own name (a training input must not be
    mistaken for its enlargement)."""
    stem = file_name[:-4] if file_name.lower().endswith(".png") else file_name
    return f"{stem}_{MAP_PNG_SIDE}px.png"


def map_png(image: np.ndarray, *, side: int = MAP_PNG_SIDE) -> bytes:
    """PNG bytes of a flow map enlarged for a slide: each map pixel becomes a square of
    ``ceil(side / width)`` pixels (nearest neighbour, so the map's own pixels stay crisp).

    Parameters
    ----------
    image : ndarray, uint8, (S, S, 3) RGB
        The map (``ClipFlow.map_rgb``), e.g. 28×28.
    side : int
        The smallest width wanted, px: a 28 px map becomes 448×448, a 30 px one 450×450.

    Returns
    -------
    bytes
    """
    factor = max(1, -(-side // image.shape[1]))
    return png(enlarge(image, image.shape[1] * factor))


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


def colour_wheel(size: int = 200, *, scale: MapScale | None = None) -> np.ndarray:
    """The legend of the HSV encoding: direction → hue, magnitude → brightness.

    Made by encoding a synthetic flow field ``uv = (x, y)`` (magnitude 0 at the centre, 1 at
    the rim, brightness proportional to it) with ``sammflow.encode.encode_hsv`` itself, so the
    legend cannot drift from the maps. Labelled in image directions (0° = right, 90° = down).

    Parameters
    ----------
    size : int
        Side of the square legend, px.
    scale : MapScale, optional
        The brightness scale of the map it explains (``sammflow.encode.map_scale``): written
        under the disc, e.g. "full brightness = 2.41 px" (the rim's brightness), which makes
        the disc a little smaller. Without it, no scale line.

    Returns
    -------
    ndarray, uint8, shape (size, size, 3), RGB
    """
    from PIL import Image, ImageDraw

    pad = max(30, int(size * 0.17))
    font = text_font(max(10, size // 19))
    line = drawable(scale.label()) if scale is not None else ""
    extra = font.size + 6 if line else 0  # a text line under the "90° down" label
    inner = size - 2 * pad - extra
    left = pad + extra // 2
    ys, xs = np.mgrid[0:inner, 0:inner].astype(np.float32)
    u = (xs - (inner - 1) / 2) / ((inner - 1) / 2)
    v = (ys - (inner - 1) / 2) / ((inner - 1) / 2)
    radius = np.hypot(u, v)
    field = FlowField(np.dstack([u, v]).astype(np.float32) * (radius <= 1.0)[..., None])
    rgb = encode_hsv(field, scale=MapScale("robust", 0.0, 1.0))[..., ::-1].copy()
    rgb[radius > 1.0] = 255
    canvas = np.full((size, size, 3), 255, np.uint8)
    canvas[pad:pad + inner, left:left + inner] = rgb
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    cx, cy = left + inner / 2, pad + inner / 2
    # words, not arrow glyphs (the built-in font has none); two lines keep the sides narrow
    for text, (x, y), anchor in (("0°\nright", ((left + inner + size) / 2, cy), "mm"), ("90° down", (cx, pad + inner + 3), "ma"),
                                 ("180°\nleft", (left / 2, cy), "mm"), ("270° up", (cx, 3), "ma")):
        draw.multiline_text((x, y), drawable(text), fill=(40, 40, 40), font=font, anchor=anchor, align="center")
    if line:
        fitted = _fit(draw, line, size - 4, font.size)
        draw.text((size / 2, size - 3), fitted[0], fill=(20, 20, 20), font=fitted[1], anchor="md")
    return np.asarray(image)


#: What each channel of a ``uvs`` / ``uv`` map holds: colour, quantity, unit.
MAP_CHANNELS = (("red", "u (horizontal, + right)", "px"), ("green", "v (vertical, + down)", "px"), ("blue", "optical strain", "px/px"))


def map_channels(flow: FlowField, *, params: EncodeParams = EncodeParams()) -> list[tuple[str, str, float, float, str]]:
    """What 0 and 255 stand for in each channel of a ``uvs`` / ``uv`` map: each channel is its
    quantity at the map size (``sammflow.encode.flow_arrays``), min-max normalised on its own.

    Parameters
    ----------
    flow : FlowField
    params : EncodeParams
        ``channels`` (``uvs``: three channels, ``uv``: two, blue 0), ``size``, ``interpolation``.

    Returns
    -------
    list of (colour, quantity, low, high, unit)
        ``low`` is shown as 0 and ``high`` as 255 (both equal: a constant channel, all 0).
    """
    arrays = flow_arrays(flow, params=params)
    count = 3 if params.channels == "uvs" else 2
    return [(colour, quantity, float(arrays[i].min()), float(arrays[i].max()), unit)
            for i, (colour, quantity, unit) in enumerate(MAP_CHANNELS[:count])]


def map_legend(flow: FlowField, *, params: EncodeParams = EncodeParams(), size: int = 224) -> tuple[np.ndarray, str]:
    """The legend of a flow map, as an image and a caption.

    Parameters
    ----------
    flow : FlowField
        The flow the map was made from.
    params : EncodeParams
        The map's encoding.
    size : int
        Side of the square image, px.

    Returns
    -------
    image : ndarray, uint8, (size, size, 3), RGB
        ``hsv``: the colour wheel with the map's brightness scale written under it
        (``colour_wheel``); ``uvs`` / ``uv``: each channel's colour with the range of its
        quantity that 0–255 spans (``map_channels``).
    caption : str
        ``"colour legend (direction = hue): full brightness = 2.41 px"``, or ``"channels: R = u,
        G = v, B = strain, each min-max normalised"`` (``B = 0`` for ``uv``).
    """
    if params.channels == "hsv":
        scale = map_scale(flow, params=params)
        return colour_wheel(size, scale=scale), f"colour legend (direction = hue): {scale.label()}"
    from PIL import Image, ImageDraw

    rows = map_channels(flow, params=params)
    if params.channels == "uv":
        rows.append(("blue", "0 (not used)", 0.0, 0.0, ""))
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    colours = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 70, 220)}
    line = max(11, size // 16)
    step = (size - 8) // len(rows)
    for i, (colour, quantity, low, high, unit) in enumerate(rows):
        top = 4 + i * step
        draw.rectangle((6, top + 2, 6 + line, top + 2 + line), fill=colours[colour])
        text, font = _fit(draw, f"{colour[0].upper()} = {quantity}", size - line - 16, line)
        draw.text((line + 12, top + 2), text, fill=(20, 20, 20), font=font)
        if unit:  # what 0 and 255 stand for (a constant channel is all 0)
            span = f"0 = {_number(low)}, 255 = {_number(high)} {unit}" if high > low else f"constant {_number(low)} {unit}: 0"
            text, font = _fit(draw, span, size - line - 16, line - 1)
            draw.text((line + 12, top + 4 + line), text, fill=(70, 70, 70), font=font)
    blue = "B = strain" if params.channels == "uvs" else "B = 0"
    return np.asarray(image), f"channels: R = u, G = v, {blue}, each min-max normalised"


def _number(value: float) -> str:
    """A value with three significant digits (-1.23, 0.0456, 12.3)."""
    return f"{value:.3g}"


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
        Arrows shorter than this fraction of the flow's scale are left out (noise).

    The flow's scale is the robust one of the maps (``sammflow.encode.map_scale``: the 99th
    percentile of the magnitude away from the border), not its largest value: a border
    artefact of Farnebäck (tens of px at a small ``winsize``) neither hides every real arrow
    nor crosses the crop. Flow beyond the scale is drawn at the scale's length (as the map
    clips its brightness).

    Returns
    -------
    ndarray, uint8, (H·upscale, W·upscale, 3), RGB
    """
    h, w = image.shape[:2]
    base = cv2.resize(image, (w * upscale, h * upscale), interpolation=cv2.INTER_CUBIC)
    canvas = cv2.cvtColor(base, cv2.COLOR_GRAY2RGB) if base.ndim == 2 else base.copy()
    canvas = (canvas * 0.8).astype(np.uint8)  # darken a little so coloured arrows stand out
    peak = map_scale(FlowField(np.asarray(uv, np.float32))).full if uv.size else 0.0
    if peak <= 0:
        return canvas
    for y in range(step // 2, h, step):
        for x in range(step // 2, w, step):
            dx, dy = float(uv[y, x, 0]), float(uv[y, x, 1])
            length = float(np.hypot(dx, dy))
            if length < min_fraction * peak:
                continue
            if length > peak:
                dx, dy = dx * peak / length, dy * peak / length
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


def panel(tiles: Sequence[tuple[np.ndarray, str]], *, columns: int, tile: int = 224, title: str = "",
          scale: int = 1) -> np.ndarray:
    """Captioned tiles in a grid on white: the downloadable version of a page's figure.

    The grid is ``min(columns, len(tiles))`` tiles wide, and a short last row is centred, so
    no blank band is left on either side. Canvas size, with ``n`` tiles, ``c = min(columns, n)``
    columns and ``r = ceil(n / columns)`` rows: width ``c·tile + (c + 1)·10``, height
    ``(30 if title else 0) + r·(tile + 22 + 10) + 10``, all times ``scale``. A caption or title
    wider than its space is drawn smaller (down to 10·scale px), then shortened with "…".

    Parameters
    ----------
    tiles : sequence of (image, caption)
        uint8 grey or RGB images, any size (resized to fit ``tile·scale``).
    columns : int
    tile : int
        Side of a tile at ``scale=1``, px.
    title : str
        Printed above the grid.
    scale : int
        1 on screen; ``DOWNLOAD_SCALE`` for a download: every size (tiles, gaps, caption band,
        fonts of 13 px captions and a 16 px title) multiplied, so the PNG is ``scale`` times the
        1× layout with text as readable.

    Returns
    -------
    ndarray, uint8, RGB
    """
    from PIL import Image, ImageDraw

    head = 30 * scale if title else 0
    label = 22 * scale
    gap = 10 * scale
    tile = tile * scale
    count = len(tiles)
    columns = max(1, min(columns, count))
    rows = max(1, -(-count // columns))
    width = columns * tile + (columns + 1) * gap
    height = head + rows * (tile + label + gap) + gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        text, font = _fit(draw, title, width - 2 * gap, 16 * scale, 10 * scale)
        draw.text((gap, 8 * scale), text, fill=(20, 20, 20), font=font)
    last = count - (rows - 1) * columns  # tiles in the last row
    for i, (image, caption) in enumerate(tiles):
        r, c = divmod(i, columns)
        shift = (columns - last) * (tile + gap) // 2 if r == rows - 1 else 0
        x = gap + c * (tile + gap) + shift
        y = head + gap + r * (tile + label + gap)
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image
        factor = tile / max(rgb.shape[:2])
        interpolation = cv2.INTER_NEAREST if factor > 2 else cv2.INTER_AREA
        fitted = cv2.resize(rgb, (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor))), interpolation=interpolation)
        canvas.paste(Image.fromarray(fitted), (x, y))
        text, font = _fit(draw, caption, tile, 13 * scale, 10 * scale)
        draw.text((x, y + fitted.shape[0] + 4 * scale), text, fill=(60, 60, 60), font=font)
    return np.asarray(canvas)


def _fit(draw: Any, text: str, width: int, size: int, smallest: int = 10) -> tuple[str, Any]:
    """``drawable(text)`` and the largest font from ``size`` down to ``smallest`` px that draws it
    within ``width`` px; still too wide at ``smallest``: shortened with "…". One line: newlines become spaces."""
    text = drawable(" ".join(text.splitlines()))
    for points in range(size, smallest - 1, -1):
        font = text_font(points)
        if draw.textlength(text, font=font) <= width:
            return text, font
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "…", font


def text_fits(text: str, width: int, size: int = 13) -> bool:
    """Whether ``panel`` draws ``text`` in ``width`` px without shortening it (at ``size`` px or smaller, down to 10)."""
    from PIL import Image, ImageDraw

    return _fit(ImageDraw.Draw(Image.new("L", (1, 1))), text, width, size)[0] == drawable(text)


def flow_tiles(result: ClipFlow, *, params: EncodeParams = EncodeParams(), tile: int = 224, arrow_step: int = 14,
               arrow_scale: float = 4.0, scale: int = 1) -> list[tuple[np.ndarray, str]]:
    """The flow page's figure of one clip, as ``panel``'s tiles: the aligned onset, the apex with
    flow arrows, the flow map (its real pixels, enlarged) and its legend (``map_legend``).

    Parameters
    ----------
    result : ClipFlow
    params : EncodeParams
        The encoding the map was made with.
    tile : int
        Side of each tile at ``scale=1``, px.
    arrow_step, arrow_scale
        ``flow_arrows``'s spacing (crop px) and length per px of flow.
    scale : int
        1 on screen; ``DOWNLOAD_SCALE`` for a download: the tiles are drawn at ``tile·scale``
        (arrows, legend text and lines as much thicker), for ``panel(..., scale=scale)``.

    Returns
    -------
    list of (image, caption)
        Four tiles, each uint8 (tile·scale, tile·scale[, 3]); the legend's caption is
        ``map_legend``'s.
    """
    side = tile * scale
    clip = result.normalized.clip
    # arrows drawn at twice the crop and brought to the tile: 1 px lines at 1×, 2 px at 2×
    arrows = resize(flow_arrows(result.apex_crop, result.flow.uv, step=arrow_step, scale=arrow_scale), side)
    size = result.flow_map.shape
    return [(resize(result.onset_crop, side), f"aligned onset (frame {clip.onset})"),
            (arrows, f"aligned apex (frame {clip.apex}) + flow"),
            (enlarge(result.map_rgb, side), f"flow map ({size[1]}×{size[0]})"),
            map_legend(result.flow, params=params, size=side)]


def clip_figure(result: ClipFlow, *, params: EncodeParams = EncodeParams(), tile: int = 224, title: str = "", arrow_step: int = 14,
                arrow_scale: float = 4.0, scale: int = 1) -> np.ndarray:
    """One clip on one slide-ready row: the aligned onset and apex as GIF stills (frame number and
    onset / apex marker, ``sammflow.animate.label_frame``), the apex with flow arrows, the flow
    map (its real pixels, enlarged) and its legend (``map_legend``: the colour wheel with the
    map's brightness scale, or what the channels of a ``uvs`` / ``uv`` map hold); the last three
    as ``flow_tiles`` draws them.

    Parameters
    ----------
    result : ClipFlow
        From ``sammflow.pipeline`` (the dashboard's ``ui.flow``).
    params : EncodeParams
        The encoding the map was made with (its brightness scale is recomputed from the flow
        for the legend: ``sammflow.encode.map_scale``).
    tile : int
        Side of each of the five tiles at ``scale=1``, px.
    title : str
        Above the row; default ``"<clip>: onset <n> -> apex <n>"``.
    arrow_step, arrow_scale
        ``flow_arrows``'s spacing (crop px) and length per px of flow.
    scale : int
        1 on screen; ``DOWNLOAD_SCALE`` for a download (every size and font multiplied: ``panel``).

    Returns
    -------
    ndarray, uint8, RGB, shape ((30 + tile + 42)·scale, (5·tile + 60)·scale, 3) (``panel`` of five tiles)
    """
    clip = result.normalized.clip
    side = tile * scale
    onset, apex = (label_frame(resize(crop, side), number, marker) for crop, number, marker in
                   ((result.onset_crop, clip.onset, "onset"), (result.apex_crop, clip.apex, "apex")))
    _, arrows, flow_map, legend = (image for image, _ in flow_tiles(result, params=params, tile=tile, arrow_step=arrow_step,
                                                                     arrow_scale=arrow_scale, scale=scale))
    size = result.flow_map.shape
    tiles = [(onset, f"aligned onset (frame {clip.onset})"), (apex, f"aligned apex (frame {clip.apex})"),
             (arrows, "apex + flow arrows"), (flow_map, f"flow map ({size[1]}×{size[0]})"),
             (legend, "direction = hue, motion = brightness" if params.channels == "hsv" else "map channels")]
    return panel(tiles, columns=len(tiles), tile=tile, title=title or f"{clip.clip}: onset {clip.onset} → apex {clip.apex}", scale=scale)


def flow_stats(result: ClipFlow, params: EncodeParams = EncodeParams()) -> dict[str, float]:
    """Summary numbers of a flow, shown beside the large map.

    Parameters
    ----------
    result : ClipFlow
    params : EncodeParams
        The encoding of ``result.flow_map`` (for ``full``).

    Returns
    -------
    dict of str → float
        ``mean`` and ``p99`` magnitude (crop px), ``direction`` (degrees, 0° = right,
        90° = down; nan without motion, and with the ``minmax`` scale for a uniform motion;
        read from the HSV map, which a ``uvs`` / ``uv`` map is encoded as for this),
        ``full``: the magnitude shown at full brightness (crop px, ``sammflow.encode.map_scale``).
    """
    magnitude = result.flow.magnitude
    hsv = result.flow_map if params.channels == "hsv" else encode_flow(result.flow, params=dataclasses.replace(params, channels="hsv"))
    try:
        direction = dominant_direction(hsv)
    except ValueError:
        direction = float("nan")
    return {"mean": float(magnitude.mean()), "p99": float(np.percentile(magnitude, 99)), "direction": direction,
            "full": map_scale(result.flow, params=params).full}


@dataclass(frozen=True)
class PairFigure:
    """The before/after figure of the alignment diagnostics for frames ``a`` and ``b``."""

    before: tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]  # MTCNN crop a, b, difference
    after: tuple[np.ndarray, np.ndarray, np.ndarray]  # aligned crop a, b, difference
    before_fraction: float  # share of pixels differing by >= threshold (nan without MTCNN boxes)
    after_fraction: float

    def png(self, a: int, b: int, threshold: int, clip: str, *, scale: int = 1) -> bytes:
        """The figure as one captioned panel (before row, after row), PNG bytes for download
        (``scale``: ``panel``'s; ``DOWNLOAD_SCALE`` for a slide)."""
        size = self.after[0].shape[0]
        blank = np.full((size, size), 255, np.uint8)
        tiles = [
            (self.before[0] if self.before[0] is not None else blank, f"MTCNN crop, frame {a}"),
            (self.before[1] if self.before[1] is not None else blank, f"MTCNN crop, frame {b}"),
            (self.before[2] if self.before[2] is not None else blank, f"|difference| ≥ {threshold}: {self.before_fraction:.1%}"),
            (self.after[0], f"aligned, frame {a}"), (self.after[1], f"aligned, frame {b}"),
            (self.after[2], f"|difference| ≥ {threshold}: {self.after_fraction:.1%}"),
        ]
        return png(panel(tiles, columns=3, tile=size, title=f"{clip}: per-frame MTCNN crops (top) vs template-aligned crops (bottom)",
                         scale=scale))


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
