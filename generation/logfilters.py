"""Third-party log lines that do not apply to this project, dropped where they are made.

transformers warns, once per class, that ``CLIPImageProcessor``/``SiglipImageProcessor`` "requires
torchvision (not installed)" whenever a diffusers pipeline module is imported. This project never installs
torchvision on purpose: the Pillow image processors transformers falls back to are all the safety checker
needs. The warning would send an operator to install a package for nothing, so it is filtered on the one
logger that emits it; every other transformers message still gets through.
"""

from __future__ import annotations

import logging

TORCHVISION_FALLBACK = "requires torchvision (not installed)"
_EMITTER = "transformers.utils.import_utils"


class _DropTorchvisionFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return TORCHVISION_FALLBACK not in record.getMessage()


def drop_inapplicable_warnings() -> None:
    """Install the filter once (idempotent). Touches only the ``logging`` module: transformers itself is not
    imported, and its logger, created here if need be, is the same object transformers uses later."""
    emitter = logging.getLogger(_EMITTER)
    if not any(isinstance(existing, _DropTorchvisionFallback) for existing in emitter.filters):
        emitter.addFilter(_DropTorchvisionFallback())
