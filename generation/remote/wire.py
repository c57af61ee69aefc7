"""The JSON the bot and its workers exchange through Redis: requests, outcomes, progress and heartbeats.

Plain JSON (SAQ's own format for job records): requests carry their input image as base64; result images do
not travel here (the worker stores each PNG under its own key, or in the shared folder, and names where). Every
error crosses as its class name and message, and is raised again on the bot's side as the same class, so the
scheduler tells a requester exactly what it would tell them for a local batch. No torch here.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from PIL import Image

from generation.errors import (
    ConfigError,
    ExecutorClosed,
    FixableFailure,
    GenerationCancelled,
    GenerationFailed,
    ImagineError,
    InvalidRequest,
    ModelLoadError,
    OutOfMemory,
    WorkerLost,
)
from generation.imagefiles import quick_png
from generation.request import GenerationRequest, ProgressEvent, Timings
from generation.warmup import Warmed

JSON = dict[str, Any]
PREVIEW_SIDE = 256  # previews are looks at a job's progress: a few KB each, never a full-size image


def dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    return json.loads(data)


# --- requests -------------------------------------------------------------------------------------
def request_to_json(request: GenerationRequest) -> JSON:
    data: JSON = {f.name: getattr(request, f.name) for f in fields(GenerationRequest)
                  if f.name not in ("init_image", "loras")}
    data["loras"] = [[name, weight] for name, weight in request.loras]
    data["init_image"] = base64.b64encode(request.init_image).decode() if request.init_image is not None else None
    return data


def request_from_json(data: Mapping[str, Any]) -> GenerationRequest:
    known = {f.name for f in fields(GenerationRequest)}
    values = {key: value for key, value in data.items() if key in known}
    values["loras"] = tuple((str(name), float(weight)) for name, weight in data.get("loras") or ())
    image = data.get("init_image")
    values["init_image"] = base64.b64decode(image) if image is not None else None
    return GenerationRequest(**values)


# --- errors ---------------------------------------------------------------------------------------
# Most specific first: an unknown subclass crosses as the nearest class the other side knows.
_ERRORS: tuple[type[ImagineError], ...] = (
    OutOfMemory, FixableFailure, WorkerLost, GenerationFailed, InvalidRequest, ModelLoadError, ConfigError,
    GenerationCancelled, ExecutorClosed, ImagineError,
)


def error_to_json(error: ImagineError) -> JSON:
    kind = next(cls for cls in _ERRORS if isinstance(error, cls))
    data: JSON = {"type": kind.__name__, "message": str(error)}
    if isinstance(error, InvalidRequest):
        data["problems"] = list(error.problems)
    return data


def error_from_json(data: Mapping[str, Any]) -> ImagineError:
    kind = next((cls for cls in _ERRORS if cls.__name__ == data.get("type")), GenerationFailed)
    if kind is InvalidRequest:
        return InvalidRequest(list(data.get("problems") or [data.get("message", "")]))
    return kind(str(data.get("message", "")))


# --- images ---------------------------------------------------------------------------------------
def png_of(image: Image.Image, *, compress_level: int = 1) -> bytes:
    return quick_png(image, level=compress_level)


def image_of(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy() if image.mode == "RGB" else image.convert("RGB")


def _preview_to_json(image: Image.Image | None) -> str | None:
    if image is None:
        return None
    small = image.copy()
    small.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    return base64.b64encode(png_of(small, compress_level=1)).decode()


def _preview_from_json(data: str | None) -> Image.Image | None:
    return image_of(base64.b64decode(data)) if data is not None else None


# --- progress and the end of a batch attempt (pub/sub messages) -----------------------------------------
def progress_to_json(event: ProgressEvent) -> JSON:
    return {"kind": "progress", "step": event.step, "total": event.total,
            "preview": _preview_to_json(event.preview),
            "previews": [_preview_to_json(image) for image in event.previews]}


def progress_from_json(data: Mapping[str, Any]) -> ProgressEvent:
    return ProgressEvent(step=int(data["step"]), total=int(data["total"]),
                         preview=_preview_from_json(data.get("preview")),
                         previews=tuple(_preview_from_json(item) for item in data.get("previews") or ()))


DONE_MESSAGE: JSON = {"kind": "done"}


# --- outcomes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredResult:
    """A request's result as the worker stored it: everything but the pixels, and where each image is."""

    request: GenerationRequest
    seeds: list[int]
    timings: Timings
    images: list[JSON]  # {"key": redis key} or {"file": path in the shared folder}
    nsfw: list[bool] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    model_sampler: str | None = None


def result_to_json(result: StoredResult) -> JSON:
    return {"ok": {"request": request_to_json(result.request), "seeds": result.seeds,
                   "timings": asdict(result.timings), "images": result.images, "nsfw": result.nsfw,
                   "warnings": result.warnings, "model_sampler": result.model_sampler}}


def outcome_from_json(data: Mapping[str, Any]) -> StoredResult | ImagineError:
    if "error" in data:
        return error_from_json(data["error"])
    ok = data["ok"]
    return StoredResult(request=request_from_json(ok["request"]), seeds=[int(seed) for seed in ok["seeds"]],
                        timings=Timings(**ok["timings"]), images=list(ok["images"]), nsfw=list(ok.get("nsfw") or []),
                        warnings=list(ok.get("warnings") or []), model_sampler=ok.get("model_sampler"))


@dataclass(frozen=True)
class Declined:
    """The worker did not run the batch, for a reason another worker may not have: ``kind`` is ``model`` (it
    does not serve the batch's model) or ``load`` (the model would not load there, say out of memory)."""

    kind: str
    message: str


def declined_to_json(declined: Declined) -> JSON:
    return {"declined": {"kind": declined.kind, "message": declined.message}}


def output_from_json(data: Mapping[str, Any]) -> list[StoredResult | ImagineError] | Declined:
    """A batch attempt's output: one outcome per request, or why the worker declined the whole batch."""
    if "declined" in data:
        return Declined(str(data["declined"]["kind"]), str(data["declined"]["message"]))
    return [outcome_from_json(item) for item in data["outcomes"]]


# --- heartbeats -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerInfo:
    """What a worker says of itself in each heartbeat."""

    id: str
    queue: str
    device: str
    host: str
    pid: int
    served: tuple[str, ...]  # the models it runs (its --models, else every enabled one)
    loaded: tuple[str, ...] = ()  # held in memory now, least recently used first
    measured: Mapping[str, Warmed] = field(default_factory=dict)  # per model, from its warm-up
    seconds_per_cost: float | None = None  # measured on real batches (a moving average)
    free_vram: int | None = None  # bytes free on its CUDA device; None elsewhere
    draining: bool = False  # finishing its batch before it exits: takes no new one
    busy: str | None = None  # the job key of the batch attempt it runs

    def speed(self, model: str) -> float | None:
        """Seconds per cost unit: measured on real batches, else by the model's warm-up."""
        if self.seconds_per_cost is not None:
            return self.seconds_per_cost
        warmed = self.measured.get(model)
        return warmed.seconds_per_cost if warmed is not None else None


def worker_to_json(info: WorkerInfo) -> JSON:
    data = asdict(info)
    data["served"], data["loaded"] = list(info.served), list(info.loaded)
    data["measured"] = {name: asdict(warmed) for name, warmed in info.measured.items()}
    return data


def worker_from_json(data: Mapping[str, Any]) -> WorkerInfo:
    known = {f.name for f in fields(WorkerInfo)}
    values = {key: value for key, value in data.items() if key in known}
    values["served"] = tuple(data.get("served") or ())
    values["loaded"] = tuple(data.get("loaded") or ())
    values["measured"] = {name: Warmed(**warmed) for name, warmed in (data.get("measured") or {}).items()}
    return WorkerInfo(**values)


def warmed_to_json(warmed: Warmed) -> JSON:
    return asdict(warmed)


def warmed_from_json(data: Mapping[str, Any]) -> Warmed:
    return Warmed(**data)


def names(text: str | None) -> tuple[str, ...]:
    """``a,b`` (a --models argument) as a tuple of names; empty for None or ''."""
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def joined(values: Sequence[str]) -> str:
    return ", ".join(values) if values else "(none)"
