"""Frame files decoded strictly: damage is an error naming the file, never a garbage frame.

``read_grey`` gives exactly what ``cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)`` gives (EXIF
orientation included) for a good file, but reads the bytes itself (any path works) and
refuses damaged data: JPEG through libjpeg-turbo (``simplejpeg``, strict), PNG checked chunk
by chunk before OpenCV sees it, BMP by its size; a header claiming more than
``MAX_FRAME_PIXELS`` is refused before decoding. No image library prints to the terminal.
"""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from sammflow.text import show_path


class FrameError(ValueError):
    """A frame file that cannot be used (missing, unreadable, not an image)."""


#: Frames larger than this are refused before decoding (a header can claim any size: a
#: "decompression bomb"). 8192 × 8192: above any camera's video frame (8K UHD is 7680 × 4320),
#: and below Pillow's own warning threshold, so Pillow never warns about a frame read here.
MAX_FRAME_PIXELS = 8192 * 8192


class _Quiet:
    """OpenCV's own log lines ("[ WARN:0@1.2] ... imdecode_ ...") name no file; sammflow
    reports every decode failure itself, naming the file. Silenced once, unless the user
    chose a level with ``OPENCV_LOG_LEVEL``."""

    done = False

    @classmethod
    def opencv(cls) -> None:
        if not cls.done:
            cls.done = True
            if "OPENCV_LOG_LEVEL" not in os.environ:
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def undecodable(path: str | Path, cause: str | None = None) -> FrameError:
    """The error for an image file that cannot be decoded, worded the same wherever it is found."""
    if cause:
        return FrameError(f"{show_path(path)}: not a decodable image ({cause})")
    return FrameError(f"{show_path(path)}: not a decodable image (corrupt, truncated, or not {Path(path).suffix[1:].upper()})")


def _too_large(path: str | Path, width: int, height: int) -> FrameError | None:
    if width * height <= MAX_FRAME_PIXELS:
        return None
    return FrameError(f"{show_path(path)}: image is {width}×{height} px, larger than any video frame: refusing to decode")


def _read_bytes(path: str | Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError as exc:
        if os.path.islink(path):
            raise FrameError(f"{show_path(path)}: broken symbolic link (to {show_path(os.readlink(path))}, which does not exist)") from exc
        raise FrameError(f"{show_path(path)}: cannot read ({exc.strerror or exc})") from exc
    except OSError as exc:
        raise FrameError(f"{show_path(path)}: cannot read ({exc.strerror or exc})") from exc
    if not data:
        raise FrameError(f"{show_path(path)}: empty file (0 bytes)")
    return data


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DECODE_FLAGS = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}


def read_grey(path: str | Path, *, reduce: int = 1) -> np.ndarray:
    """Decode an image file straight to grey.

    The result is exactly what ``cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)`` (or
    ``IMREAD_REDUCED_GRAYSCALE_<reduce>``) gives, EXIF orientation included, but damage is an
    error naming the file instead of a garbage frame and a library message on the terminal:
    JPEG is decoded by libjpeg-turbo through ``simplejpeg`` in strict mode (corrupt data
    raises); a PNG is checked (complete chunks, CRCs) and reduced to the chunks that decide its
    pixels, so libpng's warnings about metadata (colour profiles, text) cannot print either,
    then decoded by Pillow (8-bit grey: it raises on damaged image data) or, once its image
    data is checked too, by OpenCV. Any path works: the bytes are read here, by Python.

    Parameters
    ----------
    path : str or Path
        JPEG, PNG or BMP. Colour images are converted to grey, 16-bit ones scaled to 8 bits.
    reduce : {1, 2, 4, 8}
        Decode at 1/``reduce`` size (JPEG decodes this much faster).

    Returns
    -------
    ndarray, uint8, shape (H, W)

    Raises
    ------
    FrameError
        If the file is missing, unreadable (its cause, e.g. ``Permission denied``), empty,
        truncated, corrupt, not an image, or claims a size no video frame has; the message
        names the file.
    """
    if reduce not in _DECODE_FLAGS:
        raise ValueError(f"reduce must be 1, 2, 4 or 8, got {reduce}")
    data = _read_bytes(path)
    if data[:3] == b"\xff\xd8\xff":
        return _decode_jpeg(data, path, reduce)
    if data[:8] == _PNG_SIGNATURE:
        return _decode_png(data, path, reduce)
    if data[:2] == b"BM":
        _check_bmp(data, path)
    return _decode_opencv(data, path, reduce)


def frame_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file as ``read_grey`` will return it (EXIF orientation applied),
    from its header when the format allows (JPEG, PNG, BMP).

    Raises
    ------
    FrameError
        As ``read_grey``: unreadable, empty, not an image, or too large to be a frame.
    """
    data = _read_bytes(path)
    if data[:3] == b"\xff\xd8\xff":
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            return read_grey(path).shape[:2]  # a JPEG libjpeg-turbo's header reader refuses: as OpenCV does
        size = (height, width)
        orientation = _jpeg_orientation(data)
    elif data[:8] == _PNG_SIGNATURE:
        header, orientation = _png_header(data, path)
        size = (header[1], header[0])
    elif data[:2] == b"BM":
        width, height = _check_bmp(data, path)
        size, orientation = (height, width), 1
    else:
        return read_grey(path).shape[:2]
    if (error := _too_large(path, size[1], size[0])) is not None:
        raise error
    return size[::-1] if orientation >= 5 else size


def _decode_opencv(data: bytes, path: str | Path, reduce: int) -> np.ndarray:
    _Quiet.opencv()
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS[reduce])
    except cv2.error as exc:  # e.g. a header claiming more pixels than OpenCV allows
        raise undecodable(path, str(exc).strip().splitlines()[-1]) from None
    if image is None:
        raise undecodable(path)
    return image


# ---------------------------------------------------------------- JPEG

#: libjpeg warnings about bytes around the image data, not the data: the image decodes whole
#: (OpenCV printed them and went on; read quietly).
_BENIGN_JPEG = re.compile(r"extraneous bytes before marker|unknown JFIF revision|bad ICC marker|Unknown Adobe color transform|"
                          r"Invalid SOS parameters for sequential JPEG", re.IGNORECASE)


def _decode_jpeg(data: bytes, path: str | Path, reduce: int) -> np.ndarray:
    if b"\xff\xd9" not in data[-1024:]:
        # a JPEG cut short: libjpeg fills the rest with grey and only warns
        raise FrameError(f"{show_path(path)}: truncated JPEG (no end-of-image marker)")
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        # libjpeg-turbo's TurboJPEG API refuses a few unusual JPEGs libjpeg reads (odd chroma
        # sampling): OpenCV decodes those, and fails on what is not a JPEG at all
        return _decode_opencv(data, path, reduce)
    if (error := _too_large(path, width, height)) is not None:
        raise error
    # libjpeg scales by 8/8 … 1/8; this asks exactly for 1/reduce, as OpenCV's reduced modes do
    size = {"min_factor": reduce, "min_height": -(-height // reduce), "min_width": -(-width // reduce)} if reduce > 1 else {}
    try:
        image = simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True, **size)
    except ValueError as exc:
        cause = re.sub(r"^tj\w+\(\): ", "", str(exc)).strip()
        if not _BENIGN_JPEG.search(cause):
            cause = cause.removeprefix("Corrupt JPEG data: ")
            raise FrameError(f"{show_path(path)}: corrupt JPEG data ({cause[:1].lower()}{cause[1:]})") from None
        image = simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=False, **size)
    return _orient(image[..., 0], _jpeg_orientation(data))


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an image upright per its EXIF orientation (1–8), as ``cv2.imdecode`` does."""
    turned = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.T,
              6: lambda a: a.T[:, ::-1], 7: lambda a: a.T[::-1, ::-1], 8: lambda a: a.T[::-1]}.get(orientation)
    return np.ascontiguousarray(turned(image) if turned else image)


def _jpeg_orientation(data: bytes) -> int:
    """The EXIF orientation of a JPEG (1 if none): the first APP1 ``Exif`` segment before the image data."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no EXIF
            return 1
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xE1 and data[pos + 4:pos + 10] == b"Exif\x00\x00":
            return _tiff_orientation(data[pos + 10:pos + 2 + length])
        pos += 2 + length
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    """Tag 0x0112 (orientation) of a TIFF/EXIF block's first IFD; 1 if absent or malformed."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    try:
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for i in range(count):
            tag, kind, _ = struct.unpack_from(order + "HHI", tiff, ifd + 2 + 12 * i)
            if tag == 0x0112 and kind == 3:
                (value,) = struct.unpack_from(order + "H", tiff, ifd + 2 + 12 * i + 8)
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


# ---------------------------------------------------------------- PNG

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_chunks(data: bytes, path: str | Path) -> list[tuple[bytes, int, int]]:
    """(type, start, end) of each chunk up to IEND; ``FrameError`` if a chunk is cut off."""
    chunks, pos = [], 8
    while True:
        if pos + 8 > len(data):
            what = f"after the {chunks[-1][0].decode('latin-1')} chunk" if chunks else "in its header"
            raise FrameError(f"{show_path(path)}: truncated PNG (the file ends {what})")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            raise FrameError(f"{show_path(path)}: truncated PNG (the {kind.decode('latin-1')} chunk is cut off)")
        chunks.append((kind, pos, end))
        if kind == b"IEND":
            return chunks
        pos = end


def _png_header(data: bytes, path: str | Path, chunks: list[tuple[bytes, int, int]] | None = None) -> tuple[tuple[int, ...], int]:
    """IHDR fields (width, height, depth, colour type, interlace) and the eXIf orientation."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise undecodable(path, "PNG without a header chunk")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if (error := _too_large(path, width, height)) is not None:
        raise error
    if not width or not height or depth not in _PNG_DEPTHS.get(colour, ()) or compression or filtering or interlace > 1:
        raise undecodable(path, "invalid PNG header")
    orientation = 1
    for kind, start, end in chunks if chunks is not None else _png_chunks(data, path):
        if kind == b"eXIf" and data[start + 8:start + 10] in (b"II", b"MM"):
            orientation = _tiff_orientation(data[start + 8:end - 4])
            break
    return (width, height, depth, colour, interlace), orientation


def _decode_png(data: bytes, path: str | Path, reduce: int) -> np.ndarray:
    """A PNG checked (``_checked_png``), then decoded: 8-bit grey ones (sammflow's own crops,
    most grey frames) by Pillow, which raises on damaged image data (its pixels are the file's,
    as OpenCV's are; a reduced size is OpenCV's: ``INTER_LINEAR_EXACT`` to the floor of
    1/``reduce``); the others by OpenCV once their image data is checked too."""
    from PIL import Image, ImageFile

    (width, height, depth, colour, interlace), orientation, cleaned = _checked_png(data, path)
    if (depth, colour, orientation) == (8, 0, 1) and min(width, height) >= reduce and not ImageFile.LOAD_TRUNCATED_IMAGES:
        try:
            with Image.open(io.BytesIO(cleaned)) as image:
                image.load()
                grey = np.array(image)
        except (OSError, ValueError, SyntaxError, zlib.error) as exc:
            cause = (str(exc) or type(exc).__name__).removesuffix(" when reading image file")
            if "truncated" in cause:
                raise FrameError(f"{show_path(path)}: truncated PNG data (the image data ends early)") from None
            raise FrameError(f"{show_path(path)}: corrupt PNG data ({cause})") from None
        if grey.shape != (height, width) or grey.dtype != np.uint8:  # pragma: no cover - Pillow reads 8-bit grey as "L"
            raise undecodable(path, f"read as {grey.dtype} {grey.shape}")
        return grey if reduce == 1 else cv2.resize(grey, (width // reduce, height // reduce), interpolation=cv2.INTER_LINEAR_EXACT)
    _check_png_data(cleaned, path, width, height, depth, colour, interlace)
    return _decode_opencv(cleaned, path, reduce)


def _checked_png(data: bytes, path: str | Path) -> tuple[tuple[int, ...], int, bytes]:
    """The PNG's header fields, its orientation, and the PNG reduced to the chunks that decide
    its pixels (IHDR, PLTE of a palette image, IDAT, a well-formed eXIf for the orientation,
    IEND), after checking what libpng would otherwise complain about on the terminal: every
    chunk complete, critical-chunk CRCs, the image data in one run."""
    chunks = _png_chunks(data, path)
    header, orientation = _png_header(data, path, chunks)
    colour = header[3]
    kept, idat, exif = [], [], False
    for kind, start, end in chunks:
        body = memoryview(data)[start + 8:end - 4]
        crc_ok = zlib.crc32(memoryview(data)[start + 4:end - 4]) == int.from_bytes(data[end - 4:end], "big")
        critical = not kind[0] & 0x20
        if kind == b"eXIf" and not exif and crc_ok and bytes(body[:2]) in (b"II", b"MM"):
            exif = True
            kept.append(data[start:end])
        if not critical or kind == b"IEND":
            continue
        if not crc_ok:
            raise FrameError(f"{show_path(path)}: corrupt PNG data (CRC error in the {kind.decode('latin-1')} chunk)")
        if kind == b"IDAT":
            if idat and idat[-1][1] != start:
                raise FrameError(f"{show_path(path)}: corrupt PNG data (image data split by other chunks)")
            idat.append((body, end))
            kept.append(data[start:end])
        elif kind == b"PLTE":
            if colour == 3:
                if len(body) % 3 or not 0 < len(body) <= 768:
                    raise undecodable(path, "invalid PNG palette")
                kept.append(data[start:end])
        elif kind != b"IHDR":
            raise undecodable(path, f"unknown critical PNG chunk {kind.decode('latin-1')!r}")
    if not idat:
        raise undecodable(path, "no IDAT chunk")
    if colour == 3 and not any(k[4:8] == b"PLTE" for k in kept):
        raise undecodable(path, "palette PNG without a palette")
    return header, orientation, b"".join([data[:33], *kept, b"\x00\x00\x00\x00IEND\xaeB`\x82"])


def _check_png_data(png: bytes, path: str | Path, width: int, height: int, depth: int, colour: int, interlace: int) -> None:
    """The image data of a checked PNG inflated once: its length against the header, the row
    filters (what libpng reports on the terminal as "Not enough image data", "bad adaptive
    filter value"...)."""
    idat = b"".join(png[start + 8:end - 4] for kind, start, end in _png_chunks(png, path) if kind == b"IDAT")
    bits = _PNG_CHANNELS[colour] * depth
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    rows = []  # (row count, bytes per row incl. filter byte) per pass
    for x0, y0, dx, dy in passes:
        cols, count = (width - x0 + dx - 1) // dx if width > x0 else 0, (height - y0 + dy - 1) // dy if height > y0 else 0
        if cols and count:
            rows.append((count, 1 + (cols * bits + 7) // 8))
    expected = sum(count * stride for count, stride in rows)
    stream = zlib.decompressobj()
    try:
        raw = stream.decompress(idat, expected + 1)
    except zlib.error as exc:
        raise FrameError(f"{show_path(path)}: corrupt PNG data (compressed image data: {str(exc).split(': ', 1)[-1]})") from None
    if len(raw) > expected or stream.unused_data or stream.unconsumed_tail:
        raise FrameError(f"{show_path(path)}: corrupt PNG data (more image data than its {width}×{height} size holds)")
    if len(raw) < expected or not stream.eof:
        raise FrameError(f"{show_path(path)}: truncated PNG data (the image data ends early)")
    pixels, pos = np.frombuffer(raw, np.uint8), 0
    for count, stride in rows:
        filters = pixels[pos:pos + count * stride:stride]
        if filters.max(initial=0) > 4:
            raise FrameError(f"{show_path(path)}: corrupt PNG data (invalid row filter {int(filters.max())})")
        pos += count * stride


# ---------------------------------------------------------------- BMP


def _check_bmp(data: bytes, path: str | Path) -> tuple[int, int]:
    """(width, height) of a BMP from its header; ``FrameError`` if too large or cut short."""
    if len(data) < 26:
        raise FrameError(f"{show_path(path)}: truncated BMP (the file ends in its header)")
    (offset, header) = struct.unpack_from("<II", data, 10)
    if header == 12:
        width, height, _, bits = struct.unpack_from("<HHHH", data, 18)
        compression = 0
    elif len(data) >= 34:
        width, height, _, bits, compression = struct.unpack_from("<iiHHI", data, 18)
    else:
        raise FrameError(f"{show_path(path)}: truncated BMP (the file ends in its header)")
    width, height = abs(width), abs(height)
    if (error := _too_large(path, width, height)) is not None:
        raise error
    if compression in (0, 3) and bits in (1, 4, 8, 16, 24, 32):  # uncompressed: the size is known
        needed = offset + ((width * bits + 31) // 32) * 4 * height
        if len(data) < needed:
            raise FrameError(f"{show_path(path)}: truncated BMP ({len(data)} of {needed} bytes)")
    return width, height
