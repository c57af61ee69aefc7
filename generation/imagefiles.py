"""Decoding image files that come from outside: PNG, JPEG and WebP only.

Left to itself Pillow opens dozens of formats, some through an external program (EPS and PS through
Ghostscript) and some through parsers that see little use and have had their share of security
fixes (TIFF, PSD, ...). Every decode of an input image (an uploaded attachment, ``--init``, a stored
result used for a follow-up) goes through ``open_image``, which tries only the three formats a user
is told are allowed. Torch-free: the bot uses it too.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

from PIL import Image, UnidentifiedImageError

INPUT_FORMATS = ("PNG", "JPEG", "WEBP")
ALLOWED_FORMATS = "PNG, JPEG or WebP"
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
