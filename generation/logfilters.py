"""Third-party log lines that do not apply to this project, dropped where they are made.

transformers warns, once per class, that ``CLIPImageProcessor``/``SiglipImageProcessor`` "requires
torchvision (not installed)" whenever a diffusers pipeline module is imported. This project never installs
torchvision on purpose: the Pillow image processors transformers falls back to are all the safety checker
needs. The warning would send an operator to install a package for nothing, so it is filtered on the one
logger that emits it; every other transformers message still gets through.

diffusers' safety checker warns that "A black image will be returned instead" whenever it flags an image. Here
it never blacks anything out (``generation.safety`` keeps the images and the bot applies each server's policy),
so that line, which would mislead, is dropped too.
"""

from __future__ import annotations

import logging

TORCHVISION_FALLBACK = "requires torchvision (not installed)"
BLACK_IMAGE = "A black image will be returned instead"
# Each logger that emits an inapplicable line, and the words that mark that line.
_DROPPED = {"transformers.utils.import_utils": TORCHVISION_FALLBACK,
            "diffusers.pipelines.stable_diffusion.safety_checker": BLACK_IMAGE}


class _DropLine(logging.Filter):
    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def filter(self, record: logging.LogRecord) -> bool:
        return self.marker not in record.getMessage()


def drop_inapplicable_warnings() -> None:
    """Install the filters once (idempotent). Touches only the ``logging`` module: transformers and diffusers are
    not imported, and their loggers, created here if need be, are the same objects they use later."""
    for name, marker in _DROPPED.items():
        emitter = logging.getLogger(name)
        if not any(isinstance(existing, _DropLine) and existing.marker == marker for existing in emitter.filters):
            emitter.addFilter(_DropLine(marker))
