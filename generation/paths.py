"""Relative paths in config.yaml are relative to the file's own folder, never to the current directory.

An admin who runs ``imagine-bot --config /srv/imagine/config.yaml`` from their home folder, or a service
manager that starts it from ``/``, gets the same models, LoRAs and cache as ``make run`` in the project
folder. Absolute paths, ``~/...`` (expanded where the file is read) and ``builtin:`` sources stay as they
are. A model source may also be a hub repo id (``owner/name``), which looks like a relative path: it stays
a repo id unless it starts with ``.``, names a checkpoint file, or exists as a folder beside the config file.
"""

from __future__ import annotations

import os
from pathlib import Path

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


def anchored_path(path: str, base: Path) -> str:
    """``path`` (a file or folder) relative to ``base`` when it is relative; as it is otherwise."""
    if not path or path.startswith("~") or Path(path).is_absolute():
        return path
    return os.path.normpath(base / path)


def folder_of(config_file: Path | str) -> Path:
    """The absolute folder of ``config_file`` (``..`` folded away, symlinks kept as written)."""
    return Path(os.path.abspath(config_file)).parent


def is_hub_id(source: str, base: Path) -> bool:
    """Whether a model source that is not ``builtin:`` reads as a hub repo id rather than a local path."""
    if source.startswith((".", "/", "~")) or Path(source).suffix in SINGLE_FILE_SUFFIXES:
        return False
    return source.count("/") == 1 and not (base / source).exists()


def anchored_source(source: str, base: Path) -> str:
    """A model, VAE, preview decoder or LoRA source with a relative local path made relative to ``base``."""
    if source.startswith("builtin:") or is_hub_id(source, base):
        return source
    return anchored_path(source, base)
