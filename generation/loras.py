"""LoRA adapters on a loaded model: each loaded once per model, the active set switched per batch.

diffusers loads a LoRA file into the pipeline's UNet (and text encoders) as a named peft adapter;
``set_adapters`` picks the adapters that run and their weights. Adapters stay loaded with their model
(``LoadedModel.lora_state``) and go with it when it is unloaded, so a LoRA's file is read once per
model, not per batch. A batch without LoRAs disables the adapters: the UNet then computes exactly what
it computes without any adapter loaded. Only the executor's worker thread calls this module.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generation.config import LoraConfig
from generation.errors import FixableFailure, GenerationFailed
from generation.models import LoadedModel
from generation.request import LoraChoice

_log = logging.getLogger(__name__)
_Origin = tuple[str, str | None, str | None]  # (source, weight_name, revision): what an adapter was read from
# Adapters kept per model, least recently used dropped first: memory stays bounded however many LoRAs are
# configured (an SDXL LoRA can take hundreds of MB). Above the largest loras.max_per_request (10).
MAX_ADAPTERS_PER_MODEL = 16


@dataclass
class _Adapters:
    """What one model holds: the adapters loaded into it, and the set ``set_adapters`` last made active."""

    loaded: dict[str, _Origin] = field(default_factory=dict)  # least recently used first
    active: tuple[LoraChoice, ...] | None = ()  # () adapters off; None unknown (after a failure): set again


def _origin(lora: LoraConfig) -> _Origin:
    return (lora.source, lora.weight_name, lora.revision)


def use_loras(loaded: LoadedModel, wanted: Sequence[LoraChoice], configs: Mapping[str, LoraConfig]) -> None:
    """Make exactly ``wanted`` (names with non-zero weights, each in ``configs``) the active adapters.

    Raises ``FixableFailure`` naming a LoRA that cannot be loaded (its detail is logged for operators),
    ``GenerationFailed`` when the adapters cannot be switched."""
    state = loaded.lora_state if isinstance(loaded.lora_state, _Adapters) else _Adapters()
    loaded.lora_state = state
    pipe = loaded.pipe
    # An adapter whose LoRA was removed from the config, or now points at another file, goes first.
    for name, origin in list(state.loaded.items()):
        if name not in configs or _origin(configs[name]) != origin:
            _forget(pipe, state, name)
    for name, _ in wanted:
        if name not in state.loaded:
            _load(loaded, state, name, configs[name])
        state.loaded[name] = state.loaded.pop(name)  # most recently used last
    while len(state.loaded) > max(MAX_ADAPTERS_PER_MODEL, len(wanted)):
        _forget(pipe, state, next(iter(state.loaded)))
    target = tuple(wanted)
    if state.active == target:
        return
    try:
        if target:
            pipe.enable_lora()
            pipe.set_adapters([name for name, _ in target], adapter_weights=[weight for _, weight in target])
        elif any(pipe.get_list_adapters().values()):  # with no adapter left there is nothing to turn off
            pipe.disable_lora()
    except Exception as exc:
        state.active = None
        raise GenerationFailed(f"LoRAs {target!r} could not be switched on model {loaded.name}: {exc}") from exc
    state.active = target


def _load(loaded: LoadedModel, state: _Adapters, name: str, lora: LoraConfig) -> None:
    kwargs: dict[str, Any] = {"adapter_name": name}
    local = lora.source.endswith(".safetensors")
    if local:
        path = Path(lora.source).expanduser()
        if not path.is_file():
            _log.error("LoRA %s: file %s does not exist", name, path)
            raise _unavailable(name)
        where: str = str(path)
    else:
        where = lora.source
        kwargs.update(weight_name=lora.weight_name, revision=lora.revision, token=os.environ.get("HF_TOKEN"))
    try:
        with warnings.catch_warnings():
            # peft warns on every adapter after the first that a model with several adapters is unusual.
            warnings.filterwarnings("ignore", message="Already found a `peft_config`", category=UserWarning)
            loaded.pipe.load_lora_weights(where, **kwargs)
    except Exception as exc:  # diffusers, peft and the hub raise many types; all mean "this LoRA did not load"
        _log.error("LoRA %s did not load from %s on model %s: %s", name, where, loaded.name, exc, exc_info=exc)
        state.loaded[name] = _origin(lora)  # so that _forget removes whatever part of it got in
        _forget(loaded.pipe, state, name)
        raise _unavailable(name) from exc
    state.loaded[name] = _origin(lora)
    state.active = None  # peft makes a new adapter active as it loads it
    _log.info("loaded LoRA %s from %s into model %s", name, where, loaded.name)


def _unavailable(name: str) -> FixableFailure:
    return FixableFailure(f"LoRA {name!r} could not be loaded on this bot; try again without it "
                          "(the bot's operators see why in its log)")


def _forget(pipe: Any, state: _Adapters, name: str) -> None:
    """Remove adapter ``name`` from the model (freeing its weights), if any part of it was loaded."""
    state.loaded.pop(name, None)
    state.active = None
    try:
        if any(name in names for names in pipe.get_list_adapters().values()):
            pipe.delete_adapters(name)
    except Exception:  # it stays loaded but is never made active again: only memory is lost
        _log.warning("LoRA adapter %s could not be removed from its model", name, exc_info=True)
