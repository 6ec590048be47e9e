"""Frame decoding (``sammflow.frames``): exactly OpenCV's pixels for good files, an error naming
the file for damaged ones, nothing from any image library on the terminal."""

from __future__ import annotations

import builtins
import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from sammflow.frames import FrameError, frame_size, read_grey
from sammflow.dataset import discover
from test_dataset import make_clip, write_image


# --------------------------------------------------------------------------- read_grey


def test_read_grey_colour_jpeg(tmp_path):
    colour = np.zeros((24, 32, 3), np.uint8)
    colour[:] = (200, 100, 50)  # BGR
    path = write_image(tmp_path / "colour.jpg", colour)
    grey = read_grey(path)
    assert grey.dtype == np.uint8 and grey.shape == (24, 32)
    expected = 0.114 * 200 + 0.587 * 100 + 0.299 * 50  # ITU-R BT.601, as OpenCV
    assert abs(float(grey.mean()) - expected) < 3


def test_read_grey_png_is_lossless(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint8)
    assert np.array_equal(read_grey(write_image(tmp_path / "grey.png", image)), image)


def test_read_grey_16_bit_png_is_scaled_to_8_bits(tmp_path):
    image = np.full((10, 12), 40000, np.uint16)
    image[0, 0] = 65535
    image[0, 1] = 0
    path = write_image(tmp_path / "deep.png", image)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16  # really 16-bit on disk
    grey = read_grey(path)
    assert grey.dtype == np.uint8 and grey.shape == (10, 12)
    assert abs(int(grey[5, 5]) - 40000 / 256) <= 1
    assert grey[0, 0] == 255 and grey[0, 1] == 0


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp"])
def test_read_grey_reduce_halves_the_size(tmp_path, suffix):
    path = write_image(tmp_path / f"frame{suffix}", np.full((48, 64, 3), 90, np.uint8))
    assert read_grey(path).shape == (48, 64)
    half = read_grey(path, reduce=2)
    assert half.shape == (24, 32) and half.dtype == np.uint8
    assert abs(float(half.mean()) - 90) < 3
    assert read_grey(path, reduce=4).shape == (12, 16)


def test_read_grey_rejects_unsupported_reduce(tmp_path):
    path = write_image(tmp_path / "frame.png")
    with pytest.raises(ValueError, match="reduce must be 1, 2, 4 or 8, got 3"):
        read_grey(path, reduce=3)


def test_read_grey_zero_byte_file(tmp_path):
    path = tmp_path / "006_05562.jpg"
    path.write_bytes(b"")
    with pytest.raises(FrameError) as exc:
        read_grey(path)
    assert str(exc.value) == f"{path}: empty file (0 bytes)"


def test_read_grey_truncated_jpeg(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = write_image(tmp_path / "006_05562.jpg", noise)
    data = path.read_bytes()
    assert len(data) > 4096
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FrameError) as exc:
        read_grey(path)
    assert str(exc.value).startswith(str(path)) and "truncated" in str(exc.value)


def test_read_grey_text_file_named_jpg(tmp_path):
    path = tmp_path / "006_05562.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(FrameError) as exc:
        read_grey(path)
    assert str(exc.value) == f"{path}: not a decodable image (corrupt, truncated, or not JPG)"


def test_read_grey_missing_file(tmp_path):
    path = tmp_path / "006_05562.jpg"
    with pytest.raises(FrameError) as exc:
        read_grey(path)
    assert str(exc.value).startswith(f"{path}: cannot read")


def test_read_grey_folder(tmp_path):
    with pytest.raises(FrameError, match="cannot read"):
        read_grey(tmp_path)


# --------------------------------------------------------------------------- issue 10: decoding


def demo_frames(demo_root: Path) -> list[Path]:
    return sorted(demo_root.rglob("*.jpg"))


def test_decoder_output_is_bit_identical_to_opencv(demo_root):
    """The demo frames (SAMM-like grey 2040×1088) at every decode size, as ``cv2.imdecode`` gives them."""
    flags = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
    paths = demo_frames(demo_root)[::5]
    assert len(paths) >= 9
    for path in paths:
        data = np.fromfile(path, np.uint8)
        for reduce, flag in flags.items():
            ours = read_grey(path, reduce=reduce)
            assert ours.dtype == np.uint8 and ours.flags.c_contiguous
            assert np.array_equal(ours, cv2.imdecode(data, flag)), (path, reduce)


def _jpeg_variants() -> dict[str, bytes]:
    from PIL import Image

    y, x = np.mgrid[0:333, 0:517]
    grey = ((x * 7 + y * 3) % 256).astype(np.uint8)
    colour = np.dstack([grey, np.roll(grey, 9, 1), 255 - grey])
    out = {}
    for name, image in (("grey", grey), ("colour", colour)):
        for label, params in (("baseline", []), ("progressive", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                              ("restarts", [cv2.IMWRITE_JPEG_RST_INTERVAL, 3]), ("q40", [cv2.IMWRITE_JPEG_QUALITY, 40]),
                              ("444", [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])):
            out[f"{name}_{label}"] = cv2.imencode(".jpg", image, params)[1].tobytes()
    for mode in ("CMYK", "L"):
        buffer = io.BytesIO()
        Image.fromarray(colour).convert(mode).save(buffer, "JPEG")
        out[f"pil_{mode}"] = buffer.getvalue()
    for orientation in range(1, 9):  # EXIF orientation: OpenCV turns the image upright, so must we
        image = Image.fromarray(colour)
        exif = image.getexif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", exif=exif.tobytes())
        out[f"exif_orientation_{orientation}"] = buffer.getvalue()
    return out


@pytest.mark.parametrize("variant", list(_jpeg_variants()))
def test_decoder_matches_opencv_on_jpeg_variants(tmp_path, variant):
    data = _jpeg_variants()[variant]
    path = tmp_path / "frame.jpg"
    path.write_bytes(data)
    array = np.frombuffer(data, np.uint8)
    for reduce, flag in ((1, cv2.IMREAD_GRAYSCALE), (2, cv2.IMREAD_REDUCED_GRAYSCALE_2), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4)):
        expected = cv2.imdecode(array, flag)
        assert np.array_equal(read_grey(path, reduce=reduce), expected), reduce
        if reduce == 1:
            assert frame_size(path) == expected.shape


def _cut_jpeg(data: bytes) -> bytes:
    """A JPEG cut short, its end-of-image marker put back (what a copy interrupted and 'repaired' leaves)."""
    return data[: len(data) // 2] + b"\xff\xd9"


def test_corrupt_jpeg_data_is_an_error_naming_the_file_and_nothing_on_the_terminal(demo_root, tmp_path, capfd):
    path = tmp_path / "006_04660.jpg"
    path.write_bytes(_cut_jpeg(demo_frames(demo_root)[0].read_bytes()))
    for reduce in (1, 2, 4):
        with pytest.raises(FrameError) as exc:
            read_grey(path, reduce=reduce)
        assert str(exc.value) == f"{path}: corrupt JPEG data (premature end of data segment)"
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")  # libjpeg's own "Corrupt JPEG data: ..." never reaches the terminal


def test_jpeg_with_padding_before_its_end_marker_is_read(tmp_path, capfd):
    """Bytes between the last scan and the end marker (some cameras pad) are not damage: libjpeg
    warns, the image is whole; read as OpenCV reads it, quietly."""
    data = cv2.imencode(".jpg", np.tile(np.arange(64, dtype=np.uint8), (48, 1)))[1].tobytes()
    padded = data[:-2] + b"\x00\x00\x00\x00" + data[-2:]
    path = tmp_path / "frame.jpg"
    path.write_bytes(padded)
    assert np.array_equal(read_grey(path), cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE))
    assert capfd.readouterr().err == ""


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def _with_chunk(png: bytes, chunk: bytes) -> bytes:
    return png[:33] + chunk + png[33:]  # after IHDR


def _damaged_pngs(depth: int = 8) -> dict[str, tuple[bytes, str]]:
    """PNG damage, and the message each must give (libpng would print its own line for each).
    8-bit grey PNGs are decoded by Pillow, the others by OpenCV: both are checked."""
    image = np.random.default_rng(2).integers(0, 256, (40, 50), dtype=np.uint8)  # one IDAT chunk either way
    png = _png(image if depth == 8 else image.astype(np.uint16) * 257)
    assert png.count(b"IDAT") == 1
    idat_at = png.index(b"IDAT") - 4
    length = struct.unpack(">I", png[idat_at:idat_at + 4])[0]
    body = png[idat_at + 8: idat_at + 8 + length]
    end = idat_at + 12 + length
    flipped = bytearray(body)
    flipped[len(body) // 2] ^= 0x55
    bad_crc = bytearray(png)
    bad_crc[end - 1] ^= 0xFF
    bad_filter = bytearray(zlib.decompress(body))
    bad_filter[(len(bad_filter) // 40) * 20] = 7  # row 20's filter type: 0–4 exist
    bad_filter = bytes(bad_filter)
    return {
        "cut_with_end_put_back": (png[:idat_at] + _png_chunk(b"IDAT", body[: len(body) // 2]) + _png_chunk(b"IEND", b""),
                                  "truncated PNG data (the image data ends early)"),
        "cut": (png[: len(png) // 2], "truncated PNG (the IDAT chunk is cut off)"),
        "crc_error": (bytes(bad_crc), "corrupt PNG data (CRC error in the IDAT chunk)"),
        "bad_data_crc_ok": (png[:idat_at] + _png_chunk(b"IDAT", bytes(flipped)) + png[end:], "corrupt PNG data ("),
        "no_image_data": (png[:idat_at] + _png_chunk(b"IEND", b""), "not a decodable image (no IDAT chunk)"),
        "bad_row_filter": (png[:idat_at] + _png_chunk(b"IDAT", zlib.compress(bad_filter)) + png[end:], "corrupt PNG data ("),
        "image_data_split": (png[:idat_at] + _png_chunk(b"IDAT", body[:100]) + _png_chunk(b"tEXt", b"a\x00b")
                             + _png_chunk(b"IDAT", body[100:]) + png[end:], "corrupt PNG data (image data split by other chunks)"),
    }


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("case", list(_damaged_pngs()))
def test_damaged_png_is_an_error_naming_the_file_and_nothing_on_the_terminal(tmp_path, capfd, case, depth):
    data, message = _damaged_pngs(depth)[case]
    path = tmp_path / "006_04660.png"
    path.write_bytes(data)
    with pytest.raises(FrameError) as exc:
        read_grey(path)
    assert str(exc.value).startswith(f"{path}: {message}"), str(exc.value)
    assert capfd.readouterr().err == ""  # no "libpng error: ..." nor OpenCV log line


def test_png_with_odd_metadata_is_read_quietly_and_unchanged(tmp_path, capfd):
    """Ancillary chunks libpng complains about (a broken colour profile, a bad CRC in a text
    chunk) do not change the pixels: read them as OpenCV does, without its warnings."""
    image = np.random.default_rng(3).integers(0, 256, (40, 50), dtype=np.uint8)
    png = _png(image)
    broken_profile = _png_chunk(b"iCCP", b"bad\x00\x00" + zlib.compress(b"not a profile"))
    text = bytearray(_png_chunk(b"tEXt", b"Comment\x00hello"))
    text[-1] ^= 0xFF
    for extra in (broken_profile, bytes(text), _png_chunk(b"gAMA", struct.pack(">I", 45455)) + _png_chunk(b"sRGB", b"\x00")):
        path = tmp_path / "frame.png"
        path.write_bytes(_with_chunk(png, extra))
        assert np.array_equal(read_grey(path), image)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("kind", ["grey8", "grey8_exif", "grey16", "colour", "colour_alpha", "palette", "palette_trns", "grey_alpha",
                                  "grey_1bit", "interlaced"])
def test_png_modes_match_opencv(tmp_path, kind):
    from PIL import Image

    rng = np.random.default_rng(4)
    colour = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    path = tmp_path / "frame.png"
    if kind == "grey8":
        path.write_bytes(_png(colour[..., 0]))
    elif kind == "grey8_exif":  # upright per its eXIf chunk, as OpenCV does
        image = Image.fromarray(colour[..., 0].T.copy())
        exif = image.getexif()
        exif[0x0112] = 6
        image.save(path, exif=exif.tobytes())
    elif kind == "grey16":
        path.write_bytes(_png(rng.integers(0, 65536, (37, 53), dtype=np.uint16)))
    elif kind == "colour":
        path.write_bytes(_png(colour))
    elif kind == "colour_alpha":
        path.write_bytes(_png(np.dstack([colour, colour[..., :1]])))
    elif kind == "grey_alpha":
        Image.fromarray(np.dstack([colour[..., 0], colour[..., 1]]), "LA").save(path)
    elif kind == "grey_1bit":
        Image.fromarray(colour[..., 0] > 128).save(path)
    elif kind == "interlaced":
        path.write_bytes(_interlaced_png(colour[..., 0]))
    else:
        image = Image.fromarray(colour).convert("P", palette=Image.Palette.ADAPTIVE, colors=40)
        if kind == "palette_trns":
            image.info["transparency"] = 3
            image.save(path, transparency=3)
        else:
            image.save(path)
    for reduce, flag in ((1, cv2.IMREAD_GRAYSCALE), (2, cv2.IMREAD_REDUCED_GRAYSCALE_2), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4)):
        expected = cv2.imdecode(np.fromfile(path, np.uint8), flag)
        assert np.array_equal(read_grey(path, reduce=reduce), expected), reduce
    assert frame_size(path) == (37, 53) == cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_GRAYSCALE).shape


def _interlaced_png(grey: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit grey PNG (neither OpenCV nor PIL write one)."""
    h, w = grey.shape
    raw = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
        sub = grey[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b"")


def _bomb_png(width: int = 100000, height: int = 100000) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
            + _png_chunk(b"IEND", b""))


def _bomb_jpeg(width: int = 65000, height: int = 65000) -> bytes:
    data = bytearray(cv2.imencode(".jpg", np.zeros((8, 8), np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _bomb_bmp(width: int = 100000, height: int = 100000) -> bytes:
    data = bytearray(cv2.imencode(".bmp", np.zeros((8, 8), np.uint8))[1].tobytes())
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


@pytest.mark.parametrize(("suffix", "make", "size"), [(".png", _bomb_png, "100000×100000"), (".jpg", _bomb_jpeg, "65000×65000"),
                                                      (".bmp", _bomb_bmp, "100000×100000")])
def test_decompression_bomb_is_refused_before_decoding(tmp_path, capfd, suffix, make, size):
    path = tmp_path / f"006_04660{suffix}"
    path.write_bytes(make())
    for call in (lambda: read_grey(path), lambda: read_grey(path, reduce=4), lambda: frame_size(path)):
        with pytest.raises(FrameError) as exc:
            call()
        assert str(exc.value) == f"{path}: image is {size} px, larger than any video frame: refusing to decode"
    assert capfd.readouterr().err == ""


def test_truncated_bmp_is_named(tmp_path, capfd):
    path = tmp_path / "frame.bmp"
    data = cv2.imencode(".bmp", np.zeros((40, 60), np.uint8))[1].tobytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(FrameError) as exc:
        read_grey(path)
    assert str(exc.value) == f"{path}: truncated BMP ({len(data) - 100} of {len(data)} bytes)"
    assert capfd.readouterr().err == ""


def deny_reading(monkeypatch, *denied: Path) -> None:
    """Simulate ``chmod 000`` on files (tests run as root, who reads through it): opening them
    for reading fails as it would for a normal user."""
    real = builtins.open

    def guarded(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file) in denied and "r" in mode:
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)


def test_unreadable_frame_says_permission_denied(tmp_path, monkeypatch):
    path = write_image(tmp_path / "006_05562.jpg")
    deny_reading(monkeypatch, path)
    for call in (lambda: read_grey(path), lambda: read_grey(path, reduce=2), lambda: frame_size(path)):
        with pytest.raises(FrameError) as exc:
            call()
        assert str(exc.value) == f"{path}: cannot read (Permission denied)"


def test_broken_symbolic_link_frame_is_named_as_such(tmp_path):
    folder = make_clip(tmp_path, "006_1_2", [5562, 5588])
    (folder / "006_05600.jpg").symlink_to(tmp_path / "elsewhere" / "006_05600.jpg")
    clips, issues = discover(tmp_path)
    assert issues == [] and clips["006_1_2"].numbers == [5562, 5588, 5600]  # not silently "not on disk"
    with pytest.raises(FrameError) as exc:
        read_grey(clips["006_1_2"].path(5600))
    assert str(exc.value) == (f"{folder / '006_05600.jpg'}: broken symbolic link (to {tmp_path / 'elsewhere' / '006_05600.jpg'}, "
                              "which does not exist)")


