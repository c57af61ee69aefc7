"""Prompts to images with diffusers. Importing this package does not import torch."""

from generation.logfilters import drop_inapplicable_warnings

# Before any module of this package imports diffusers (whose pipelines trigger the warning at import).
drop_inapplicable_warnings()
