"""Scheduler names (``config.SCHEDULERS``) to fresh diffusers scheduler instances."""

from __future__ import annotations

import inspect
from typing import Any

import diffusers

from generation.errors import InvalidRequest

# name -> (diffusers class name, extra config). "default" keeps the model's own scheduler class.
_TABLE: dict[str, tuple[str, dict[str, Any]]] = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lcm": ("LCMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def make_scheduler(name: str, base: Any) -> Any:
    """A new scheduler built from the model's scheduler config.

    A fresh instance per pipeline call: multistep schedulers keep per-run state, and the model's
    own instance may be shared by the txt2img and img2img pipelines.
    """
    if name == "default":
        return type(base).from_config(base.config)
    if name not in _TABLE:
        raise InvalidRequest([f"scheduler {name!r} is unknown; allowed: default, {', '.join(_TABLE)}"])
    class_name, extra = _TABLE[name]
    cls = getattr(diffusers, class_name)
    # Only the keys this class takes: diffusers warns on every call about the others (a PNDM model's
    # skip_prk_steps passed to LCM, say), which would fill the log with one line per batch.
    accepted = inspect.signature(cls.__init__).parameters
    config = {key: value for key, value in base.config.items() if key in accepted or key.startswith("_")}
    return cls.from_config(config, **extra)
