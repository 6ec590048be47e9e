r"""Text that can always be printed, logged and written to a UTF-8 file, whatever path is in it.

A file name that is not valid UTF-8 (a folder named in Latin-1 on a UTF-8 system) reaches
Python as lone surrogates (``os.fsdecode(b"caf\xe9") == "caf\udce9"``); printing or writing
such a string as UTF-8 fails later, far from its cause. Every message, log line and CSV value
sammflow makes goes through ``printable`` (or ``show_path`` for a path), which shows each such
byte as ``\xe9`` and leaves valid text unchanged. Imported by every layer: it imports nothing.
"""

from __future__ import annotations

import os


def printable(text: str) -> str:
    r"""``text`` as valid Unicode: the lone surrogates a non-UTF-8 path decodes to become ``\xe9``,
    any other lone surrogate ``\udXXX``; valid text comes back unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c
                   for c in text)


def show_path(path: str | os.PathLike[str] | bytes) -> str:
    r"""``path`` as printable text (``printable`` of its file-system name): ``…/donn\xe9es/006_04660.jpg``."""
    return printable(os.fsdecode(path))


def one_line(text: str) -> str:
    """``text`` with every run of white space (newlines included) as one space: a message for one line."""
    return " ".join(str(text).split())
