"""``sammflow.figures``: the dashboard's images and charts, on constructed inputs whose answer is known.

Directions follow the flow maps' convention (``sammflow.encode``): 0° = right (+x),
90° = down (+y), hue = angle / 2 in OpenCV's HSV.
"""

from __future__ import annotations

import ast
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from sammflow import figures
from sammflow.align import Alignment, FrameMatch
from sammflow.animate import MISSING, drawable, label_size
from sammflow.annotations import ClipAnnotation
from sammflow.detect import FaceBox
from sammflow.encode import MapScale, encode_flow, encode_hsv, flow_arrays, map_scale
from sammflow.flow import FlowField
from sammflow.params import EncodeParams
from sammflow.pipeline import ClipFlow, NormalizedClip

AXES = {0: (1.0, 0.0), 90: (0.0, 1.0), 180: (-1.0, 0.0), 270: (0.0, -1.0)}


def hue_degrees(rgb: np.ndarray) -> np.ndarray:
    """The direction (degrees) an RGB colour of the maps' convention stands for."""
    pixels = np.asarray(rgb, np.uint8).reshape(-1, 1, 3)
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV)[:, 0, 0].astype(float) * 2.0


def angle_error(a: float | np.ndarray, b: float) -> np.ndarray:
    return np.abs((np.asarray(a) - b + 180.0) % 360.0 - 180.0)


def ramp_flow(degrees: float, size: int = 64, peak: float = 2.0) -> FlowField:
    """Flow in one direction whose magnitude grows from 0 (top left) to ``peak`` (bottom right):
    one direction, and (unlike a uniform field) a map with brightness to read it from."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    r = (xs + ys) / (2 * (size - 1)) * peak
    t = np.radians(degrees)
    return FlowField(np.dstack([r * np.cos(t), r * np.sin(t)]).astype(np.float32))


def clip_annotation(onset: int = 10, apex: int = 12, offset: int = 14) -> ClipAnnotation:
    return ClipAnnotation("006", "006_1_1", onset, apex, offset)


# ---------------------------------------------------------------- png, enlarge, resize, panel


@pytest.mark.parametrize("shape", [(20, 30, 3), (20, 30)], ids=["rgb", "grey"])
def test_png_round_trips_in_rgb_order(shape: tuple[int, ...]) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    data = figures.png(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == ("RGB" if len(shape) == 3 else "L")
        assert np.array_equal(np.asarray(decoded), image)  # PNG is lossless and the channels are not swapped


def test_enlarge_repeats_pixels_and_resize_makes_a_square() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    big = figures.enlarge(image, 28)
    assert big.shape == (21, 28) and np.array_equal(big[::7, ::7], image)  # 7×7 blocks of the original pixels
    assert all(len(np.unique(big[r:r + 7, c:c + 7])) == 1 for r in range(0, 21, 7) for c in range(0, 28, 7))
    assert figures.resize(np.zeros((40, 60, 3), np.uint8), 32).shape == (32, 32, 3)
    assert figures.resize(np.full((40, 60), 77, np.uint8), 16).tolist() == np.full((16, 16), 77).tolist()


def test_panel_size_and_tile_positions() -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 200, 0), (0, 200, 200)]
    tiles = [(np.full((50, 50, 3), c, np.uint8), f"tile {i}") for i, c in enumerate(colours)]
    titled = figures.panel(tiles, columns=3, tile=50, title="five")
    # width: 3 tiles + 4 gaps of 10; height: title 30 + 2 rows × (tile + 22 caption + 10 gap) + 10
    assert titled.shape == (30 + 2 * (50 + 22 + 10) + 10, 3 * 50 + 4 * 10, 3) == (204, 190, 3) and titled.dtype == np.uint8
    for i, colour in enumerate(colours):
        r, c = divmod(i, 3)
        x, y = 10 + c * 60 + (30 if r == 1 else 0), 30 + 10 + r * 82  # the short last row centred: half a tile + gap in
        assert (titled[y:y + 50, x:x + 50] == colour).all(), i  # each tile exactly where the arithmetic puts it
    # the last row's two tiles leave 30 px of white on each side, not a tile-wide band on the right
    assert (titled[30 + 10 + 82:, :38] == 255).all() and (titled[30 + 10 + 82:, 152:] == 255).all()  # (captions' antialiasing: 1 px)
    plain = figures.panel(tiles[:2], columns=2, tile=50)
    assert plain.shape == (0 + 1 * (50 + 22 + 10) + 10, 2 * 50 + 3 * 10, 3)
    assert (plain[10:60, 10:60] == colours[0]).all()


def test_panel_fits_any_tile_into_its_square() -> None:
    wide = np.full((20, 80), 0, np.uint8)  # grey, 4:1
    small = np.full((5, 5, 3), (0, 0, 255), np.uint8)  # enlarged with visible pixels
    out = figures.panel([(wide, "wide"), (small, "small")], columns=2, tile=40)
    # 40×10, its caption 4 px below it (not below the square), white between
    assert (out[10:20, 10:50] == 0).all() and (out[20:24, 10:50] == 255).all() and (out[24:36, 10:50] < 255).any()
    assert (out[10:50, 60:100] == (0, 0, 255)).all()


# ---------------------------------------------------------------- colour wheel and arrows


def test_colour_wheel_encodes_each_direction_where_the_legend_says() -> None:
    size = 200
    wheel = figures.colour_wheel(size)
    assert wheel.shape == (size, size, 3) and wheel.dtype == np.uint8
    pad = max(30, int(size * 0.17))
    inner = size - 2 * pad
    centre = pad + (inner - 1) / 2
    radius = (inner - 1) / 2
    for degrees, (ux, uy) in AXES.items():
        # 80 % of the way out from the centre along the direction: right = 0°, below = 90° ...
        x, y = round(centre + 0.8 * radius * ux), round(centre + 0.8 * radius * uy)
        expected = np.degrees(np.arctan2((y - pad) - (inner - 1) / 2, (x - pad) - (inner - 1) / 2)) % 360  # exact, ≈ degrees
        assert angle_error(expected, degrees) < 1.0
        assert angle_error(hue_degrees(wheel[y, x])[0], expected) <= 2.0, (degrees, wheel[y, x])
        # and it is the colour a flow map gives to flow in that direction (its brightest pixel)
        flow_map = encode_hsv(ramp_flow(degrees))[..., ::-1]
        assert angle_error(hue_degrees(wheel[y, x])[0], hue_degrees(flow_map[-1, -1])[0]) <= 2.0
    # right of centre: pure red (0°), as bright as the distance from the centre (magnitude, min-max scaled)
    for fraction in (0.2, 0.5, 0.8, 0.95):
        x, y = round(centre + fraction * radius), round(centre)
        distance = np.hypot(x - centre, y - centre) / radius
        r, g, b = (int(v) for v in wheel[y, x])
        assert b == 0 and g <= 2 and abs(r - 255 * distance) <= 3, (fraction, wheel[y, x], distance)  # centre is between pixels: ≤ 2°
    # outside the disc is white; the centre (no motion) black
    assert wheel[pad + 1, pad + 1].tolist() == [255, 255, 255] and wheel[round(centre), round(centre)].max() < 10


def test_flow_arrows_draw_nothing_for_zero_flow() -> None:
    image = np.random.default_rng(1).integers(0, 256, (56, 48), dtype=np.uint8)
    out = figures.flow_arrows(image, np.zeros((56, 48, 2), np.float32))
    base = cv2.resize(image, (96, 112), interpolation=cv2.INTER_CUBIC)
    assert out.shape == (112, 96, 3)
    assert np.array_equal(out, np.dstack([(base * 0.8).astype(np.uint8)] * 3))  # the darkened crop, grey, nothing else


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_flow_arrows_follow_a_uniform_flow_in_its_hue(degrees: int) -> None:
    size, step, scale, upscale = 56, 14, 3.0, 2  # arrows of 6 crop px from 7, 21, 35, 49: all inside
    ux, uy = AXES[degrees]
    uv = np.zeros((size, size, 2), np.float32)
    uv[..., 0], uv[..., 1] = 2.0 * ux, 2.0 * uy
    out = figures.flow_arrows(np.full((size, size), 100, np.uint8), uv, step=step, scale=scale, upscale=upscale)
    coloured = (out.max(axis=2) - out.min(axis=2)) > 30  # background is grey 80
    starts = [(x * upscale, y * upscale) for y in range(step // 2, size, step) for x in range(step // 2, size, step)]
    length = 2.0 * scale * upscale  # 12 px at drawing resolution
    for sx, sy in starts:
        # the middle of each shaft is exactly the arrow colour: hue of the direction, full saturation and value
        mx, my = round(sx + ux * length / 2), round(sy + uy * length / 2)
        assert angle_error(hue_degrees(out[my, mx])[0], degrees) <= 2.0 and out[my, mx].max() == 255 and out[my, mx].min() == 0
        assert coloured[round(sy + uy * (length - 1)), round(sx + ux * (length - 1))]  # reaches its end
    # every coloured pixel belongs to an arrow: within the shaft's span (+ tip and line width) along the
    # flow, and within the tip's half-width (≈ 0.35 × 12 / √2 + line width) across it
    ys, xs = np.mgrid[0:out.shape[0], 0:out.shape[1]]
    near = np.zeros(coloured.shape, bool)
    for sx, sy in starts:
        along = (xs - sx) * ux + (ys - sy) * uy
        across = np.abs((xs - sx) * uy - (ys - sy) * ux)
        near |= (along >= -3) & (along <= length + 3) & (across <= 6)
    assert not (coloured & ~near).any()
    assert (out[~near] == 80).all()  # elsewhere: the darkened crop (100 × 0.8), untouched
    assert coloured.sum() > 2 * length * len(starts)  # each arrow is a line of some width, not a dot
    assert angle_error(np.median(hue_degrees(out[coloured & (out.max(axis=2) == 255)])), degrees) <= 2.0


def test_flow_arrows_leave_out_flow_below_the_fraction_of_the_peak() -> None:
    uv = np.zeros((56, 56, 2), np.float32)
    uv[:28, :, 0] = 2.0  # top half: 2 px right
    uv[28:, :, 0] = 0.2  # bottom half: 10 % of the peak, below min_fraction = 0.15
    out = figures.flow_arrows(np.full((56, 56), 100, np.uint8), uv)
    coloured = (out.max(axis=2) - out.min(axis=2)) > 30
    assert coloured[:60].any() and not coloured[62:].any()  # arrows start at rows 7, 21 (×2) only


def test_flow_arrows_are_scaled_by_the_interior_not_by_a_border_artefact() -> None:
    """Issue 10 item 13, the arrows' side: one 50 px border streak (Farnebäck at a small winsize)
    made every real arrow shorter than 15 % of the "peak" and left none."""
    uv = np.zeros((112, 112, 2), np.float32)
    uv[40:70, 40:70] = (0.0, 1.5)  # the real motion: 1.5 px down
    uv[5:9, 0:30] = (50.0, 0.0)  # the artefact, along the top edge (0.4 % of the interior), 50 px right
    out = figures.flow_arrows(np.full((112, 112), 100, np.uint8), uv, step=14, scale=4.0)
    coloured = (out.max(axis=2) - out.min(axis=2)) > 30
    assert coloured[80:140, 80:140].any()  # arrows where the face moved (crop px 40–70, ×2)
    # the artefact's two arrows (from x = 7 and 21) are drawn 1.5 px × 4 long, not 200 px across the crop
    assert coloured[:30, :60].any() and not coloured[:30, 70:].any()


# ---------------------------------------------------------------- difference and the pair figure


def test_difference_fraction_is_exact_and_below_threshold_is_black() -> None:
    a = np.full((10, 10), 100, np.uint8)
    b = a.copy()
    b[:3] = 120  # 30 pixels differ by 20
    b[3, :5] = 90  # 5 pixels by 10: exactly the threshold, counted
    b[4, :5] = 95  # 5 pixels by 5: hidden
    image, fraction = figures.difference(a, b, 10)
    assert fraction == 35 / 100
    assert figures.difference(b, a, 10)[1] == fraction  # |a - b|
    assert image.shape == (10, 10, 3) and image.dtype == np.uint8
    shown = image.any(axis=2)
    assert shown[:3].all() and shown[3, :5].all() and not shown[3, 5:].any() and not shown[4:].any()
    expected = cv2.applyColorMap(np.uint8([[60]]), cv2.COLORMAP_INFERNO)[0, 0, ::-1]  # 20 × 3, inferno, RGB
    assert (image[0, 0] == expected).all()
    assert figures.difference(a, a, 1)[1] == 0.0 and not figures.difference(a, a, 1)[0].any()


def test_pair_figure_with_mtcnn_boxes() -> None:
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (120, 160), dtype=np.uint8) for _ in range(2)]
    boxes = [FaceBox(20, 10, 100, 90), FaceBox(24, 12, 104, 92)]
    crops = [rng.integers(0, 256, (64, 64), dtype=np.uint8) for _ in range(2)]
    figure = figures.pair_figure(frames, boxes, crops, 12)
    before = [figures.resize(f[b.y1:b.y2, b.x1:b.x2], 64) for f, b in zip(frames, boxes)]
    assert np.array_equal(figure.before[0], before[0]) and np.array_equal(figure.before[1], before[1])
    diff, fraction = figures.difference(before[0], before[1], 12)
    assert np.array_equal(figure.before[2], diff) and figure.before_fraction == fraction
    assert figure.after[0] is crops[0] and figure.after[1] is crops[1]
    diff, fraction = figures.difference(crops[0], crops[1], 12)
    assert np.array_equal(figure.after[2], diff) and figure.after_fraction == fraction
    with Image.open(io.BytesIO(figure.png(3, 7, 12, "006_1_1"))) as image:
        assert image.size == (3 * 64 + 4 * 10, 30 + 2 * (64 + 22 + 10) + 10)
        assert np.array_equal(np.asarray(image.convert("L"))[30 + 10:30 + 10 + 64, 10:74], before[0])  # first tile: MTCNN crop a


def test_pair_figure_without_boxes() -> None:
    crops = [np.zeros((32, 32), np.uint8), np.full((32, 32), 50, np.uint8)]
    frame = np.full((80, 80), 9, np.uint8)
    none = figures.pair_figure([None, None], [None, None], crops, 10)
    assert none.before == (None, None, None) and np.isnan(none.before_fraction) and none.after_fraction == 1.0
    one = figures.pair_figure([frame, None], [FaceBox(0, 0, 40, 40), None], crops, 10)
    assert one.before[0] is not None and one.before[1] is None and one.before[2] is None and np.isnan(one.before_fraction)
    with Image.open(io.BytesIO(none.png(1, 2, 10, "c"))) as image:
        pixels = np.asarray(image.convert("L"))
        assert image.size == (3 * 32 + 40, 30 + 2 * (32 + 22 + 10) + 10)
        assert (pixels[40:72, 10:42] == 255).all()  # a blank tile where MTCNN found no face
        assert (pixels[40 + 64:72 + 64, 10:42] == 0).all()  # the aligned crop a below it


# ---------------------------------------------------------------- flow statistics


@pytest.mark.parametrize("degrees", [0.0, 30.0, 90.0, 137.0, 180.0, 251.0, 300.0])
def test_flow_stats_of_a_known_flow(degrees: float) -> None:
    field = ramp_flow(degrees, size=64, peak=2.0)
    crops = {10: np.zeros((64, 64), np.uint8), 12: np.zeros((64, 64), np.uint8)}
    alignment = Alignment.from_matches(FaceBox(0, 0, 64, 64), {10: FrameMatch(0, 0, 1.0), 12: FrameMatch(0, 0, 1.0)})
    result = ClipFlow(NormalizedClip(clip_annotation(), crops, alignment), field, encode_flow(field, params=EncodeParams()))
    stats = figures.flow_stats(result)
    ys, xs = np.mgrid[0:64, 0:64]
    magnitude = (xs + ys) / 126 * 2.0
    assert stats["mean"] == pytest.approx(1.0, abs=1e-6) and stats["mean"] == pytest.approx(magnitude.mean(), abs=1e-6)
    assert stats["p99"] == pytest.approx(np.percentile(magnitude, 99), abs=1e-5)
    assert angle_error(stats["direction"], degrees) <= 1.0 + 1e-9  # the map's hue is quantised to 2°


def test_flow_stats_without_motion() -> None:
    field = FlowField(np.zeros((32, 32, 2), np.float32))
    crops = {10: np.zeros((32, 32), np.uint8), 12: np.zeros((32, 32), np.uint8)}
    alignment = Alignment.from_matches(FaceBox(0, 0, 32, 32), {10: FrameMatch(0, 0, 1.0), 12: FrameMatch(0, 0, 1.0)})
    stats = figures.flow_stats(ClipFlow(NormalizedClip(clip_annotation(), crops, alignment), field, encode_flow(field)))
    assert stats["mean"] == 0.0 and stats["p99"] == 0.0 and np.isnan(stats["direction"])


# ---------------------------------------------------------------- panel layout (issue 10, item 18)


@pytest.mark.parametrize("count, columns, grid, last_x", [
    (6, 5, (5, 2), [10 + 2 * 60]),  # the grid page: 6 clips in 5 columns, the sixth centred
    (2, 5, (2, 1), [10, 70]),  # fewer tiles than columns: the canvas is as wide as the tiles
    (8, 4, (4, 2), [10, 70, 130, 190]),  # full rows: unchanged
    (7, 4, (4, 2), [40, 100, 160]),
])
def test_panel_canvas_fits_its_tiles_and_centres_a_short_last_row(count, columns, grid, last_x) -> None:
    tiles = [(np.zeros((50, 50), np.uint8), str(i)) for i in range(count)]
    out = figures.panel(tiles, columns=columns, tile=50)
    used, rows = grid
    assert out.shape == (rows * (50 + 22 + 10) + 10, used * 50 + (used + 1) * 10, 3)
    y = 10 + (rows - 1) * 82
    dark = np.flatnonzero((out[y + 25] == 0).all(axis=1))
    starts = [int(x) for x in dark if x == 0 or x - 1 not in set(dark)]
    assert starts == last_x
    left, right = starts[0], out.shape[1] - (starts[-1] + 50)
    assert abs(left - right) <= 1  # as much white on either side


def test_panel_shortens_a_caption_to_its_tile() -> None:
    long = "006_1_1 · Happiness · AU 6+12+25 · a very long caption indeed that cannot fit"
    out = figures.panel([(np.zeros((60, 60), np.uint8), long), (np.zeros((60, 60), np.uint8), "b")], columns=2, tile=60)
    caption = out[10 + 60 + 2:10 + 60 + 22, :, 0] < 200
    assert caption[:, 10:70].any() and not caption[:, 71:80].any()  # stays above its own tile: no ink in the gap
    assert figures.text_fits("aligned onset (frame 4512)", 224) and not figures.text_fits(long, 60)


# ---------------------------------------------------------------- text drawn with glyphs the font has (issue 10, item 14)


@pytest.fixture()
def drawn(monkeypatch) -> list[tuple[str, object]]:
    """Every (text, font) any image function draws (``ImageDraw.text``; ``multiline_text`` calls it)."""
    calls: list[tuple[str, object]] = []
    original = ImageDraw.ImageDraw.text

    def record(self, xy, text, *args, **kwargs):
        calls.append((text, kwargs.get("font", args[1] if len(args) > 1 else None)))
        return original(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", record)
    return calls


def missing_glyphs(calls: list[tuple[str, object]]) -> list[tuple[str, str]]:
    """The characters drawn as the font's missing-glyph box: (text, character)."""
    bad = []
    for text, font in calls:
        assert font is not None, text  # never Pillow's default (another font than the one checked)
        box = font.getmask("\uffff")
        box = (box.size, bytes(box))
        for char in set(text) - {"\n"}:
            mask = font.getmask(char)
            if (mask.size, bytes(mask)) == box:
                bad.append((text, char))
    return bad


def flow_result(size: int = 64, degrees: float = 90.0) -> ClipFlow:
    field = ramp_flow(degrees, size=size, peak=2.0)
    rng = np.random.default_rng(3)
    crops = {10: rng.integers(0, 256, (size, size), dtype=np.uint8), 12: rng.integers(0, 256, (size, size), dtype=np.uint8)}
    alignment = Alignment.from_matches(FaceBox(0, 0, size, size), {10: FrameMatch(0, 0, 1.0), 12: FrameMatch(0, 0, 1.0)})
    return ClipFlow(NormalizedClip(clip_annotation(10, 12, 14), crops, alignment), field, encode_flow(field))


def test_every_figure_draws_only_glyphs_its_font_has(drawn) -> None:
    tile = np.zeros((40, 40), np.uint8)
    figures.panel([(tile, "Onset → apex × 28×28 ≥ 12 · ≈ 15 s − Farnebäck"), (tile, "b")], columns=2, tile=400,
                  title="Onset → apex flow maps")
    figures.colour_wheel(200)
    figures.colour_wheel(224, scale=MapScale("minmax", 0.0213, 3.95))
    crop = np.zeros((200, 200), np.uint8)
    pair = figures.pair_figure([None, None], [None, None], [crop, crop], 10)
    pair.png(1, 2, 10, "006_1_1")  # "|difference| ≥ 10"
    figures.clip_figure(flow_result(), tile=96)
    from sammflow.animate import encode_gif, label_frame

    label_frame(np.zeros((224, 224), np.uint8), 4512, "onset/apex")
    encode_gif([tile, tile], numbers=[10, 12], clip=clip_annotation())
    texts = [text for text, _ in drawn]
    assert len(texts) >= 25 and missing_glyphs(drawn) == []
    # what was asked for is there, in characters the font has
    assert "Onset -> apex flow maps" in texts and "|difference| >= 10: 0.0%" in texts and "frame 4512" in texts
    assert "Onset -> apex x 28x28 >= 12 · ~ 15 s - Farneback" in texts


def test_the_check_finds_the_boxes_the_original_figures_drew(drawn) -> None:
    """The glyph check is not vacuous: the arrow, times and >= of the original captions are boxes."""
    from PIL import ImageFont

    draw = ImageDraw.Draw(Image.new("RGB", (300, 30)))
    draw.text((0, 0), "Onset → apex 28×28 ≥ 12", font=ImageFont.load_default(size=13))
    assert sorted(char for _, char in missing_glyphs(drawn)) == ["×", "→", "≥"]


def _strings(path: Path) -> list[str]:
    """Every string literal of a file, f-strings' literal parts included."""
    return [node.value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_the_pages_captions_and_titles_become_text_the_font_draws(drawn) -> None:
    root = Path(__file__).parents[1]
    # the pages, and the modules whose text they pass into figures (clip captions: tables; titles and labels: figures, animate)
    files = [*sorted((root / "app_pages").glob("*.py")), *(root / "sammflow" / f"{name}.py" for name in ("figures", "animate", "tables"))]
    strings = {text for path in files for text in _strings(path)} - {"\uffff"}  # (animate's probe of the missing glyph)
    assert {"Onset → apex flow maps", "aligned onset (frame "} <= strings  # the captions passed to panel(...) are among them
    for text in sorted(strings):
        # every character has a glyph or a sensible replacement: no "?" where the text had none
        assert drawable(text).count(MISSING) == text.count(MISSING), (text, drawable(text))
    captions = sorted(t for t in strings if t.strip() and len(t) < 120)
    tiles = [(np.zeros((8, 8), np.uint8), text) for text in captions]
    figures.panel(tiles, columns=8, tile=400, title=" ".join(captions[:5]))
    assert missing_glyphs(drawn) == [] and len(drawn) == len(captions) + 1


# ---------------------------------------------------------------- the legend's scale, the clip figure (issue 10, items 13, 17)


def test_colour_wheel_with_a_scale_writes_it_and_keeps_the_encoding(drawn) -> None:
    size = 224
    wheel = figures.colour_wheel(size, scale=MapScale("robust", 0.0, 2.4137))
    assert wheel.shape == (size, size, 3)
    assert drawn[-1][0] == "full brightness = 2.41 px"
    pad = max(30, int(size * 0.17))
    extra = max(10, size // 19) + 6  # one text line, 17 px at 224
    inner = size - 2 * pad - extra
    left = pad + extra // 2
    centre_x, centre_y, radius = left + (inner - 1) / 2, pad + (inner - 1) / 2, (inner - 1) / 2
    for degrees, (ux, uy) in AXES.items():
        x, y = round(centre_x + 0.8 * radius * ux), round(centre_y + 0.8 * radius * uy)
        assert angle_error(hue_degrees(wheel[y, x])[0], degrees) <= 3.0, (degrees, wheel[y, x])
    # rim at full brightness (the scale's px), the centre black
    assert wheel[round(centre_y), round(centre_x + 0.97 * radius)].max() >= 245 and wheel[round(centre_y), round(centre_x)].max() < 10
    ink = (wheel[size - 3 - 12:size - 2] < 128).all(axis=2)
    assert ink.any() and np.flatnonzero(ink.any(axis=0)).min() > 10  # the line, centred at the bottom


def test_clip_figure_puts_onset_apex_arrows_map_and_legend_side_by_side(drawn) -> None:
    result = flow_result(size=64, degrees=90.0)
    out = figures.clip_figure(result, tile=160)
    assert out.shape == (30 + 160 + 22 + 10 + 10, 5 * 160 + 6 * 10, 3)
    texts = [t for t, _ in drawn]
    assert "006_1_1: onset 10 -> apex 12" in texts  # the title
    assert {"frame 10", "onset", "frame 12", "apex", "aligned onset (frame 10)", "flow map (28x28)"} <= set(texts)
    assert f"full brightness = {map_scale(result.flow).full:.3g} px" in texts
    y, x = 30 + 10, 10
    onset = out[y + 20:y + 160, x:x + 160, 0]  # below the label strip: the onset crop, as it is
    assert np.array_equal(onset, figures.resize(result.onset_crop, 160)[20:])
    flow_map = out[y:y + 160, x + 3 * 170:x + 3 * 170 + 160]
    assert np.array_equal(flow_map, figures.enlarge(result.map_rgb, 160)[:160])  # the map's own pixels
    assert figures.png(out)[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- uniform motion has a direction (issue 10, item 13)


def test_flow_stats_of_uniform_motion_has_its_direction() -> None:
    uv = np.zeros((32, 32, 2), np.float32)
    uv[...] = (0.0, -1.0)  # everything 1 px up: min-max gave a black map and no direction
    crops = {10: np.zeros((32, 32), np.uint8), 12: np.zeros((32, 32), np.uint8)}
    alignment = Alignment.from_matches(FaceBox(0, 0, 32, 32), {10: FrameMatch(0, 0, 1.0), 12: FrameMatch(0, 0, 1.0)})
    field = FlowField(uv)
    stats = figures.flow_stats(ClipFlow(NormalizedClip(clip_annotation(), crops, alignment), field, encode_flow(field)))
    assert stats["mean"] == pytest.approx(1.0) and angle_error(stats["direction"], 270.0) <= 1.0
    assert stats["full"] == pytest.approx(1.0)  # 1 px is full brightness
    assert figures.flow_stats(ClipFlow(NormalizedClip(clip_annotation(), crops, alignment), field, encode_flow(field, params=EncodeParams(
        scale="minmax"))), params=EncodeParams(scale="minmax"))["full"] == pytest.approx(1.0)  # black = full = 1 px: nothing to show




# ---------------------------------------------------------------- the legend of every kind of map (issue 11)


def test_map_legend_of_an_hsv_map_is_the_colour_wheel_with_its_scale() -> None:
    field = ramp_flow(45.0, size=64, peak=2.0)
    for params in (EncodeParams(), EncodeParams(scale="minmax"), EncodeParams(scale="fixed", fixed_scale=3.0)):
        image, caption = figures.map_legend(field, params=params, size=160)
        scale = map_scale(field, params=params)
        assert np.array_equal(image, figures.colour_wheel(160, scale=scale))
        assert caption == f"colour legend (direction = hue): {scale.label()}"
    assert figures.map_legend(field, params=EncodeParams(scale="fixed", fixed_scale=3.0))[1].endswith("full brightness = 3 px (fixed)")


def test_map_legend_of_uvs_and_uv_maps_names_each_channel_and_its_range(drawn) -> None:
    field = ramp_flow(45.0, size=64, peak=2.0)
    arrays = flow_arrays(field, params=EncodeParams(channels="uvs"))
    rows = figures.map_channels(field, params=EncodeParams(channels="uvs"))
    assert [(colour, low, high, unit) for colour, _, low, high, unit in rows] == [
        ("red", float(arrays[0].min()), float(arrays[0].max()), "px"), ("green", float(arrays[1].min()), float(arrays[1].max()), "px"),
        ("blue", float(arrays[2].min()), float(arrays[2].max()), "px/px")]
    image, caption = figures.map_legend(field, params=EncodeParams(channels="uvs"), size=224)
    assert image.shape == (224, 224, 3) and caption == "channels: R = u, G = v, B = strain, each min-max normalised"
    texts = [t for t, _ in drawn]
    assert texts[0] == "R = u (horizontal, + right)" and texts[2] == "G = v (vertical, + down)" and texts[4] == "B = optical strain"
    assert texts[1] == f"0 = {rows[0][2]:.3g}, 255 = {rows[0][3]:.3g} px"
    assert (image[10, 10] == (220, 30, 30)).all()  # the red swatch
    drawn.clear()
    image, caption = figures.map_legend(field, params=EncodeParams(channels="uv"), size=224)
    assert caption == "channels: R = u, G = v, B = 0, each min-max normalised" and len(figures.map_channels(field, params=EncodeParams(channels="uv"))) == 2
    assert [t for t, _ in drawn][-1] == "B = 0 (not used)" and missing_glyphs(drawn) == []
    still = FlowField(np.zeros((32, 32, 2), np.float32))
    figures.map_legend(still, params=EncodeParams(channels="uvs"), size=224)
    assert "constant 0 px: 0" in [t for t, _ in drawn]


def test_the_slide_figure_of_a_uvs_map_has_its_channel_legend(drawn) -> None:
    field = ramp_flow(90.0, size=64, peak=2.0)
    result = flow_result(size=64, degrees=90.0)
    params = EncodeParams(channels="uvs")
    uvs = ClipFlow(result.normalized, field, encode_flow(field, params=params))
    out = figures.clip_figure(uvs, params=params, tile=160)
    texts = [t for t, _ in drawn]
    assert "map channels" in texts and "R = u (horizontal, + right)" in texts and not any(t.startswith("full brightness") for t in texts)
    legend = out[30 + 10:30 + 10 + 160, 10 + 4 * 170:10 + 4 * 170 + 160]
    assert np.array_equal(legend, figures.map_legend(field, params=params, size=160)[0])


def test_flow_stats_of_a_uvs_map_read_the_direction_of_the_flow() -> None:
    field = ramp_flow(135.0, size=64, peak=2.0)
    result = flow_result(size=64)
    for channels in ("uvs", "uv"):
        params = EncodeParams(channels=channels)
        stats = figures.flow_stats(ClipFlow(result.normalized, field, encode_flow(field, params=params)), params)
        assert angle_error(stats["direction"], 135.0) <= 3.0, channels


# ---------------------------------------------------------------- downloads at 2× (issue 15)


def _dark_rows(band: np.ndarray) -> int:
    """How many rows of an RGB band hold text (a pixel darker than mid-grey)."""
    return int((band.min(axis=2) < 128).any(axis=1).sum())


@pytest.mark.parametrize("title", ["Onset → apex flow maps", ""], ids=["titled", "untitled"])
def test_a_panel_at_download_scale_is_the_screen_layout_doubled_with_text_twice_as_tall(title: str) -> None:
    tiles = [(np.full((50, 50), 200, np.uint8), "Apex (frame 12) gjpq"), (np.zeros((30, 60, 3), np.uint8), "b"),
             (np.full((28, 28, 3), 90, np.uint8), "flow map (28×28)")]
    screen = figures.panel(tiles, columns=2, tile=200, title=title)
    slide = figures.panel(tiles, columns=2, tile=200, title=title, scale=figures.DOWNLOAD_SCALE)
    assert slide.shape[2] == 3
    assert abs(slide.shape[0] - 2 * screen.shape[0]) <= 1 and abs(slide.shape[1] - 2 * screen.shape[1]) <= 1
    # the first caption's band: under its tile, as wide as it (panel's layout, times the scale)
    heights = []
    for out, scale in ((screen, 1), (slide, 2)):
        head, gap, tile, label = (30 if title else 0) * scale, 10 * scale, 200 * scale, 22 * scale
        heights.append(_dark_rows(out[head + gap + tile:head + gap + tile + label, gap:gap + tile]))
    assert heights[0] >= 10 and heights[1] >= 2 * heights[0], heights
    if title:  # the title's band too
        assert _dark_rows(slide[:60]) >= 2 * _dark_rows(screen[:30]) > 0


def test_a_tile_at_download_scale_keeps_its_pixels() -> None:
    """A 28×28 map enlarged into a 2× tile still shows its own pixels (nearest neighbour)."""
    rng = np.random.default_rng(5)
    flow_map = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    slide = figures.panel([(flow_map, "map")], columns=1, tile=168, scale=2)
    assert np.array_equal(slide[20:20 + 336, 20:20 + 336], figures.enlarge(flow_map, 336))


@pytest.mark.parametrize(("width", "side"), [(28, 448), (30, 450), (64, 448), (500, 500)])
def test_a_downloaded_map_is_enlarged_to_crisp_squares(width: int, side: int) -> None:
    rng = np.random.default_rng(width)
    flow_map = rng.integers(0, 256, (width, width, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(figures.map_png(flow_map))) as image:
        assert image.size == (side, side)
        big = np.asarray(image.convert("RGB"))
    factor = side // width
    assert np.array_equal(big, np.repeat(np.repeat(flow_map, factor, axis=0), factor, axis=1))


def test_the_clip_figure_and_the_flow_tiles_at_download_scale(drawn) -> None:
    result = flow_result(size=64, degrees=90.0)
    screen = figures.clip_figure(result, tile=96)
    del drawn[:]
    slide = figures.clip_figure(result, tile=96, scale=2)
    assert slide.shape == (2 * screen.shape[0], 2 * screen.shape[1], 3)
    fonts = {text: font.size for text, font in drawn}
    assert fonts["006_1_1: onset 10 -> apex 12"] == 32 and fonts["frame 10"] == label_size(192)
    tiles = figures.flow_tiles(result, tile=96, scale=2)
    assert [image.shape[:2] for image, _ in tiles] == [(192, 192)] * 4
    assert [caption for _, caption in tiles][:3] == ["aligned onset (frame 10)", "aligned apex (frame 12) + flow", "flow map (28×28)"]
    assert tiles[3][1].startswith("colour legend (direction = hue): full brightness = ")


def test_the_alignment_figure_at_download_scale() -> None:
    crop = np.zeros((64, 64), np.uint8)
    pair = figures.pair_figure([None, None], [None, None], [crop, crop], 10)
    sizes = []
    for scale in (1, 2):
        with Image.open(io.BytesIO(pair.png(1, 2, 10, "006_1_1", scale=scale))) as image:
            sizes.append(image.size)
    assert sizes[1] == (2 * sizes[0][0], 2 * sizes[0][1]) == (2 * (3 * 64 + 40), 2 * (30 + 2 * (64 + 32) + 10))
