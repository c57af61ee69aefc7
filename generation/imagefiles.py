"""Decoding image files that come from outside: PNG, JPEG and WebP only.

Left to itself Pillow opens dozens of formats, some through an external program (EPS and PS through
Ghostscript) and some through parsers that see little use and have had their share of security
fixes (TIFF, PSD, ...). Every decode of an input image (an uploaded attachment, ``--init``, a stored
result used for a follow-up) goes through ``open_image``, which tries only the three formats a user
is told are allowed. Torch-free: the bot uses it too.

It also holds the one way an image file carries its parameters (A1111's "parameters" PNG text chunk; an
EXIF UserComment in WebP and JPEG), written by the bot's uploads and the CLI's files alike.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

try:  # ISA-L's deflate: at its fastest level several times zlib's speed, for files of the same size
    from isal import isal_zlib
except ImportError:  # a platform without its wheels: zlib does the same work, slower
    isal_zlib = None  # type: ignore[assignment]

INPUT_FORMATS = ("PNG", "JPEG", "WEBP")
ALLOWED_FORMATS = "PNG, JPEG or WebP"
OUTPUT_FORMATS = ("PNG", "WEBP", "JPEG")
_EXIF_IFD = 0x8769
_USER_COMMENT = 0x9286
_UNICODE_PREFIX = b"UNICODE\x00"  # EXIF UserComment character code, as read by common SD tools
# Content types Discord reports for the allowed formats (it derives them from the file name).
ALLOWED_CONTENT_TYPES = frozenset({"image/png", "image/jpeg", "image/jpg", "image/pjpeg", "image/webp"})

# Leading bytes of formats people upload by mistake (or on purpose), to say what a refused file is.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%!PS", "an EPS/PostScript file"),
    (b"\xc5\xd0\xd3\xc6", "an EPS file"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"8BPS", "a Photoshop (PSD) file"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"%PDF", "a PDF document"),
)


def open_image(data: bytes) -> Image.Image:
    """Open ``data`` lazily (only the header is read) as PNG, JPEG or WebP.

    Anything else raises ``PIL.UnidentifiedImageError`` without any other format's code running.
    Use it as a context manager, as ``Image.open``."""
    return Image.open(io.BytesIO(data), formats=INPUT_FORMATS)


def other_format(data: bytes) -> str | None:
    """What a file that is not PNG, JPEG or WebP looks like (e.g. "a TIFF image"), if it is a known kind."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def unreadable_reason(data: bytes) -> str:
    """Why ``data`` did not open as an input image, for a message that ends in what is allowed."""
    name = other_format(data)
    return f"is {name}" if name is not None else "is not a PNG, JPEG or WebP image"


@dataclass(frozen=True)
class InputImageProblem:
    """Why bytes cannot be an input image: ``other`` names a known other format (``kind`` "other_format"),
    ``size`` is the image's size when it is too large. Callers word it for their user."""

    kind: Literal["too_large", "other_format", "not_an_image", "damaged"]
    other: str | None = None
    size: tuple[int, int] = (0, 0)


def input_image_problem(data: bytes, max_side: int) -> InputImageProblem | None:
    """The one check of an input image's bytes (CPU work: callers on the event loop use a thread):
    PNG, JPEG or WebP, at most ``max_side`` pixels a side (read from the header, before any decoding),
    and whole. None when it may be used."""
    try:
        with open_image(data) as image:
            if max(image.size) > max_side:
                return InputImageProblem("too_large", size=image.size)
            image.verify()
    except UnidentifiedImageError:
        other = other_format(data)
        return InputImageProblem("other_format", other=other) if other else InputImageProblem("not_an_image")
    except Exception:  # Pillow raises many types (SyntaxError, struct.error, OSError) for broken files
        return InputImageProblem("damaged")
    return None


def _exif_with_parameters(parameters_text: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(_EXIF_IFD)[_USER_COMMENT] = _UNICODE_PREFIX + parameters_text.encode("utf-16-be")
    return exif.tobytes()


def encode_with_parameters(image: Image.Image, fmt: str, parameters_text: str, *, lossless: bool = False,
                           quality: int = 90) -> bytes:
    """``image`` as ``fmt`` (one of ``OUTPUT_FORMATS``) carrying ``parameters_text`` where SD tools read it."""
    buffer = io.BytesIO()
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", parameters_text)
        image.save(buffer, format="PNG", pnginfo=info)
    elif fmt == "WEBP":
        exif = _exif_with_parameters(parameters_text)
        image.save(buffer, format="WEBP", lossless=lossless, quality=quality, exif=exif)
    elif fmt == "JPEG":
        exif = _exif_with_parameters(parameters_text)
        image.convert("RGB").save(buffer, format="JPEG", quality=quality, exif=exif)
    else:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    return buffer.getvalue()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {"L": 0, "RGB": 2, "RGBA": 6}  # 8 bits per channel
_PNG_FILTER_UP = 2


def _png_chunk(kind: bytes, *data: bytes) -> list[bytes]:
    """A chunk's pieces, joined once with the rest of the file: an image's data is never copied to build it."""
    crc = zlib.crc32(kind)
    for piece in data:
        crc = zlib.crc32(piece, crc)
    return [struct.pack(">I", sum(map(len, data))) + kind, *data, struct.pack(">I", crc)]


def _png_text_chunk(keyword: str, text: str) -> list[bytes]:
    """tEXt where the text is Latin-1 (what the format allows there), else iTXt in UTF-8, as Pillow chooses."""
    try:
        return _png_chunk(b"tEXt", keyword.encode("latin-1") + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        # keyword, compression flag and method, empty language tag and translated keyword, then the text
        return _png_chunk(b"iTXt", keyword.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8"))


# Big images are deflated in parts on several threads, as pigz does: each part is a raw deflate stream of its
# own, the ones before the last ending on a byte boundary (a sync flush), so that their concatenation is one
# valid stream. A part cannot refer back into the part before it, which costs next to nothing here: the Up
# filter's rows and zlib's run-length strategy find their repeats close by.
DEFLATE_PART_MIN_BYTES = 256 * 1024  # zlib's: below this a thread hop costs more than it saves
ISAL_PART_MIN_BYTES = 2 * 1024 * 1024  # ISA-L's, four times zlib's speed: a 512x512 image is one part
DEFLATE_THREADS = max(1, min(4, os.cpu_count() or 1))
# The caller's thread deflates the first part; the pool starts its threads only when a part is submitted.
_DEFLATE_POOL = ThreadPoolExecutor(max(1, DEFLATE_THREADS - 1), thread_name_prefix="png-deflate")


def _with_isal(level: int) -> bool:
    return level == 1 and isal_zlib is not None


def _compressor(level: int, wbits: int) -> zlib._Compress:
    """At level 1 (what the bot stores) ISA-L where it is installed, else zlib with its run-length strategy."""
    if _with_isal(level):
        return isal_zlib.compressobj(1, isal_zlib.DEFLATED, wbits)  # type: ignore[return-value]
    return zlib.compressobj(level, zlib.DEFLATED, wbits, 9, zlib.Z_RLE if level == 1 else zlib.Z_DEFAULT_STRATEGY)


def _deflate_part(part: memoryview, level: int, last: bool) -> bytes:
    deflate = _compressor(level, -zlib.MAX_WBITS)
    return deflate.compress(part) + deflate.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _deflate(data: memoryview, level: int) -> list[bytes]:
    """``data`` as a zlib stream (header, deflate data, Adler-32), in pieces; both deflates free the GIL."""
    part_min_bytes = ISAL_PART_MIN_BYTES if _with_isal(level) else DEFLATE_PART_MIN_BYTES
    parts = min(DEFLATE_THREADS, len(data) // part_min_bytes)
    if parts < 2:
        deflate = _compressor(level, zlib.MAX_WBITS)
        return [deflate.compress(data), deflate.flush()]
    step = -(-len(data) // parts)
    pieces = [data[start:start + step] for start in range(0, len(data), step)]
    later = [_DEFLATE_POOL.submit(_deflate_part, piece, level, index == len(pieces) - 1)
             for index, piece in enumerate(pieces[1:], start=1)]
    first = _deflate_part(pieces[0], level, last=False)
    header = zlib.compress(b"", level)[:2]  # the two bytes zlib itself writes for this level
    return [header, first, *(future.result() for future in later), struct.pack(">I", zlib.adler32(data))]


def quick_png(image: Image.Image, parameters_text: str | None = None, *, level: int = 1) -> bytes:
    """``image`` as PNG, written in one pass: every row with the "Up" filter, then deflate at zlib's ``level``; at
    level 1 (what the bot stores) with ISA-L where it is installed, else with zlib's run-length strategy, which
    looks for repeats of the byte before only.

    Pillow's encoder tries five filters on every row and keeps the best, and zlib's default strategy searches
    for repeats far back; on the rows of a generated image neither finds much more than the Up filter and runs
    do. At level 1 this takes a tenth of Pillow's time at its level 1 (a quarter with zlib alone), for files of
    about the same size (``python -m bench.png_encode``); a big image is deflated in parts on several threads
    (``_deflate``). Modes other than L, RGB and RGBA go through Pillow."""
    colour_type = _PNG_COLOUR_TYPES.get(image.mode)
    if colour_type is None:
        buffer = io.BytesIO()
        info = PngImagePlugin.PngInfo()
        if parameters_text is not None:
            info.add_text("parameters", parameters_text)
        image.save(buffer, format="PNG", pnginfo=info, compress_level=level)
        return buffer.getvalue()
    pixels = np.asarray(image, dtype=np.uint8).reshape(image.height, -1)
    rows = np.empty((image.height, pixels.shape[1] + 1), dtype=np.uint8)
    rows[:, 0] = _PNG_FILTER_UP
    rows[0, 0] = 0  # the first row has nothing above it: no filter
    rows[0, 1:] = pixels[0]
    np.subtract(pixels[1:], pixels[:-1], out=rows[1:, 1:])  # wraps modulo 256, as the filter is defined
    compressed = _deflate(rows.data.cast("B"), level)
    header = struct.pack(">IIBBBBB", image.width, image.height, 8, colour_type, 0, 0, 0)
    parts = [_PNG_SIGNATURE, *_png_chunk(b"IHDR", header)]
    if parameters_text is not None:
        parts += _png_text_chunk("parameters", parameters_text)
    parts += [*_png_chunk(b"IDAT", *compressed), *_png_chunk(b"IEND")]
    return b"".join(parts)


def read_parameters(data: bytes) -> str | None:
    """The generation parameters an encoded image carries (PNG text chunk or EXIF UserComment)."""
    with open_image(data) as image:  # PNG, WebP or JPEG, never another decoder
        text = image.info.get("parameters")
        if isinstance(text, str):
            return text
        comment = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    if isinstance(comment, bytes) and comment.startswith(_UNICODE_PREFIX):
        return comment[len(_UNICODE_PREFIX) :].decode("utf-16-be", errors="replace")
    return None
