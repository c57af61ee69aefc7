"""A diffusers SD1 pipeline's weights under the original (CompVis/LDM) key names: a single-file checkpoint.

Only what the tiny model has: CrossAttn/plain UNet blocks, a KL VAE with a mid attention, a CLIP text
model. diffusers reads such a file back with its own converter, taking the shapes from the configs it
fetches from the hub, so a round trip proves the single-file path end to end.
"""

from __future__ import annotations

import re
from typing import Any

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _rename(rest: str, table: dict[str, str]) -> str:
    for new, old in table.items():
        if rest == new or rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def _unet_key(key: str, per_block: int, attention_blocks: set[int]) -> str:
    for new, old in _UNET_TOP.items():
        if key.startswith(new + "."):
            return old + key[len(new):]
    step = per_block + 1  # LDM numbers resnets, attentions and the resampler of a level in one sequence
    if match := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        level, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
        slot = 1 + level * step + index
        return f"input_blocks.{slot}.0.{_rename(rest, _RESNET)}" if kind == "resnets" else \
            f"input_blocks.{slot}.1.{rest}"
    if match := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(match[1]) + 1) * step}.0.op.{match[2]}"
    if match := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(match[1])}.{_rename(match[2], _RESNET)}"
    if match := re.match(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{match[1]}"
    if match := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        level, kind, index, rest = int(match[1]), match[2], int(match[3]), match[4]
        slot = level * step + index
        return f"output_blocks.{slot}.0.{_rename(rest, _RESNET)}" if kind == "resnets" else \
            f"output_blocks.{slot}.1.{rest}"
    if match := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        level = int(match[1])
        position = 2 if level in attention_blocks else 1
        return f"output_blocks.{level * step + per_block}.{position}.conv.{match[2]}"
    raise ValueError(f"no original name for UNet key {key}")


def _vae_key(key: str, levels: int) -> str:
    key = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", key)
    if match := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{match[1]}.block.{match[2]}.{match[3].replace('conv_shortcut', 'nin_shortcut')}"
    if match := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
        return f"encoder.down.{match[1]}.downsample.{match[2]}"
    if match := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        # The original decoder counts its levels from the bottom.
        level = levels - 1 - int(match[1])
        return f"decoder.up.{level}.block.{match[2]}.{match[3].replace('conv_shortcut', 'nin_shortcut')}"
    if match := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(match[1])}.upsample.{match[2]}"
    if match := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{match[1]}.mid.block_{int(match[2]) + 1}.{match[3].replace('conv_shortcut', 'nin_shortcut')}"
    if match := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        return f"{match[1]}.mid.attn_1.{_rename(match[2], _VAE_ATTENTION)}"
    return key  # conv_in, conv_out, norm_out, quant_conv, post_quant_conv keep their names


def sd1_single_file(pipe: Any) -> dict[str, Any]:
    """The state dict of an SD1-family ``pipe`` as an original-format checkpoint (tensors made contiguous)."""
    unet_config = pipe.unet.config
    attention_blocks = {index for index, kind in enumerate(unet_config.up_block_types) if "CrossAttn" in kind}
    checkpoint: dict[str, Any] = {}
    for key, tensor in pipe.unet.state_dict().items():
        name = _unet_key(key, unet_config.layers_per_block, attention_blocks)
        checkpoint[f"model.diffusion_model.{name}"] = tensor.contiguous()
    levels = len(pipe.vae.config.up_block_types)
    for key, tensor in pipe.vae.state_dict().items():
        checkpoint[f"first_stage_model.{_vae_key(key, levels)}"] = tensor.contiguous()
    for key, tensor in pipe.text_encoder.state_dict().items():
        # Original checkpoints name the CLIP text model's weights text_model.*; transformers 5 drops that level.
        key = key if key.startswith("text_model.") else f"text_model.{key}"
        checkpoint[f"cond_stage_model.transformer.{key}"] = tensor.contiguous()
    return checkpoint
