"""Small random LoRAs for builtin:tiny, written as the .safetensors files that ``load_lora_weights`` reads.

peft puts low-rank adapters on the tiny UNet's attention projections; their ``lora_B`` matrices (zero
when peft creates them, so a fresh adapter changes nothing) are filled with seeded random numbers, and
diffusers' own ``save_lora_weights`` writes them in its LoRA format, as a trained LoRA would be shipped.
"""

from __future__ import annotations

from pathlib import Path


def write_random_lora(path: Path, *, seed: int, scale: float = 0.5, source: str = "builtin:tiny") -> Path:
    """A LoRA for ``source``'s UNet at ``path`` whose effect depends on ``seed``."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from generation.builtin import build_builtin

    unet = build_builtin(source).unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(path.parent, unet_lora_layers=layers, weight_name=path.name,
                                              safe_serialization=True)
    return path
