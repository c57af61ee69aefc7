"""Which device and dtype a pipeline runs on, and the speed/memory switches applied to it."""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from typing import Any

import torch

from generation.config import DType, ExecutorConfig, ModelConfig
from generation.errors import ModelLoadError

_log = logging.getLogger(__name__)

_DTYPES: dict[str, Any] = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class Placement:
    """Where a model lives: ``device`` is a torch device string, ``dtype`` a torch dtype."""

    device: str
    dtype: Any

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def choose_device(requested: str) -> str:
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"executor.device is {requested} but no CUDA GPU is visible; allowed here: cpu or auto")
    if requested.startswith("cuda:") and int(requested[5:]) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ModelLoadError(f"executor.device is {requested} but this machine has {count} CUDA GPU(s); "
                             f"allowed: cuda:0 to cuda:{count - 1}")
    if requested == "mps" and not _mps_available():
        raise ModelLoadError("executor.device is mps but MPS is not available; allowed here: cpu or auto")
    return requested


def choose_placement(executor: ExecutorConfig, model: ModelConfig) -> Placement:
    """The model's dtype wins over the executor's; ``auto`` is fp16 on GPUs and fp32 on CPU."""
    device = choose_device(executor.device)
    wanted: DType = model.dtype if model.dtype != "auto" else executor.dtype
    if wanted == "auto":
        wanted = "float32" if device == "cpu" else "float16"
    if device == "cpu" and wanted == "float16":
        # Many CPU kernels lack fp16; a slow crawl or an error is worse than using more memory.
        _log.warning("float16 on CPU is unsupported by many kernels; using float32")
        wanted = "float32"
    if wanted == "bfloat16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
        raise ModelLoadError("dtype bfloat16 is not supported by this GPU; allowed: float16 or float32")
    return Placement(device=device, dtype=_DTYPES[wanted])


def optimise(pipe: Any, executor: ExecutorConfig, placement: Placement) -> None:
    """Apply the configured switches once, after loading. SDPA attention is diffusers' default with torch 2."""
    pipe.set_progress_bar_config(disable=True)
    if executor.cpu_offload and placement.is_cuda:
        # Offload moves each component to the GPU only while it runs; it replaces pipe.to(device).
        pipe.enable_model_cpu_offload(device=placement.device)
    else:
        pipe.to(placement.device)
    if executor.attention_slicing:
        pipe.enable_attention_slicing()
    if executor.channels_last and placement.device != "cpu":
        pipe.unet.to(memory_format=torch.channels_last)
    if executor.fuse_qkv:
        fuse_qkv(pipe)
    # executor.compile: generation.compiled wraps the UNet and the decoder (load_model), keeping the eager ones.


def fuse_qkv(pipe: Any) -> None:
    """One matmul for each attention's q, k and v (diffusers' ``fuse_qkv_projections``), where the pipeline has it."""
    fuse = getattr(pipe, "fuse_qkv_projections", None)
    if fuse is None:
        _log.warning("executor.fuse_qkv: %s cannot fuse its projections; left as they are", type(pipe).__name__)
        return
    try:
        fuse()
    except Exception as exc:  # a component without fusable attention: run as loaded rather than fail the model
        _log.warning("executor.fuse_qkv: projections not fused (%s: %s)", type(exc).__name__, exc)


def free_memory(placement: Placement | None = None) -> None:
    """Give cached allocator blocks back after an OOM or an eviction."""
    gc.collect()
    if (placement is None or placement.is_cuda) and torch.cuda.is_available():
        torch.cuda.empty_cache()


def peak_memory_bytes(placement: Placement) -> int | None:
    if placement.is_cuda and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return None
