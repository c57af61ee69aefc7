"""Scheduler names as A1111-style tools write them in an image's ``Sampler`` field. Torch-free.

Our config names schedulers ``dpmpp_2m_karras``, ``euler_a`` ... and ``default`` (the model's own). A
file's parameters carry the name those tools read back ("DPM++ 2M Karras", "Euler a"), and never
``default``: the runner resolves it from the scheduler the model was loaded with (``sampler_of``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SAMPLER_NAMES: dict[str, str] = {
    "euler": "Euler",
    "euler_a": "Euler a",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "ddim": "DDIM",
    "pndm": "PNDM",
    "lcm": "LCM",
    "unipc": "UniPC",
}

# diffusers scheduler classes a model may ship with, by the name A1111 gives the same sampler.
_CLASS_NAMES: dict[str, str] = {
    "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler a",
    "DDIMScheduler": "DDIM",
    "PNDMScheduler": "PNDM",
    "LCMScheduler": "LCM",
    "UniPCMultistepScheduler": "UniPC",
    "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun",
    "KDPM2DiscreteScheduler": "DPM2",
    "KDPM2AncestralDiscreteScheduler": "DPM2 a",
    "DDPMScheduler": "DDPM",
    "DPMSolverSDEScheduler": "DPM++ SDE",
}


def sampler_of(class_name: str, config: Mapping[str, Any]) -> str:
    """The A1111 name of a diffusers scheduler, from its class and config (Karras sigmas are in the config)."""
    karras = " Karras" if config.get("use_karras_sigmas") else ""
    if class_name == "DPMSolverMultistepScheduler":
        order = config.get("solver_order", 2)
        sde = " SDE" if "sde" in str(config.get("algorithm_type", "")) else ""
        return f"DPM++ {order}M{sde}{karras}"
    name = _CLASS_NAMES.get(class_name)
    if name is None:  # an unusual class: its own name, still better than "default"
        return class_name.removesuffix("Scheduler")
    return f"{name}{karras}"


def sampler_name(scheduler: str | None, model_sampler: str | None = None) -> str | None:
    """The ``Sampler`` value for a request's scheduler: the configured name's A1111 form; for ``default``, the
    model's own (``model_sampler``), or None when that is not known (the field is then left out)."""
    if scheduler is None or scheduler == "default":
        return model_sampler
    return SAMPLER_NAMES.get(scheduler, scheduler)
