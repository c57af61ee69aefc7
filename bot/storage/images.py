"""Result images on disk: ``<data_dir>/images/<job_id>_<index>.png``. Sync helpers: run them in a thread."""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
from pathlib import Path

from PIL import Image

_log = logging.getLogger(__name__)

IMAGES_DIR = "images"
_JOB_ID = re.compile(r"[0-9a-f]{32}")


def check_job_id(job_id: str) -> str:
    """``job_id`` if it is a uuid hex; it becomes part of file names, so nothing else is accepted."""
    if not _JOB_ID.fullmatch(job_id):
        raise ValueError(f"job id {job_id!r} is not 32 lowercase hex digits")
    return job_id


def image_relpath(job_id: str, index: int) -> str:
    return f"{IMAGES_DIR}/{check_job_id(job_id)}_{int(index)}.png"


def write_image(data_dir: Path, relpath: str, data: bytes) -> tuple[int, int]:
    """Write ``data`` atomically (temp file + rename) and return the image's (width, height)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size  # also proves the bytes are an image before they are stored
    except OSError as exc:  # PIL's UnidentifiedImageError
        raise ValueError(f"{relpath}: the data is not an image ({exc})") from exc
    target = data_dir / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".png")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return size


def read_image(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        _log.warning("stored image %s is missing", path)
        return None


def remove_images(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
