"""What a model's start-up load measured: the warm-up generation that follows every background load.

``Runner.prepare`` loads a model (reporting download progress) and then runs two small generations
on it: the first pays for the one-off costs (kernel selection, allocator growth, lazy imports) and is
not timed; the second is timed, and its seconds per step give the first ETAs before any real batch
has been measured. No torch here: the bot reads these records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from generation.request import GenerationRequest, Timings, estimate_cost

WARMUP_STEPS = 2  # the untimed first pass: enough to touch every kernel the real steps use
MEASURE_STEPS = 3  # the timed pass


@dataclass(frozen=True)
class DownloadProgress:
    """Bytes of a model's weights fetched so far, out of the total the load needs (cached files count as done)."""

    done_bytes: int
    total_bytes: int
    current_file: str | None = None

    @property
    def fraction(self) -> float:
        return 1.0 if self.total_bytes <= 0 else min(1.0, self.done_bytes / self.total_bytes)


DownloadCallback = Callable[[DownloadProgress], None]


@dataclass(frozen=True)
class Warmed:
    """A model loaded and measured: ready to serve."""

    model: str
    device: str
    load_s: float
    seconds_per_step: float  # at the model's default size, batch of one
    seconds_per_image: float  # one image at the default size and default steps, decode included
    seconds_per_cost: float  # for the scheduler's ETAs (cost units: see ``estimate_cost``)


def measured(model: str, device: str, load_s: float, request: GenerationRequest, timings: Timings,
             *, default_steps: int, cost_weight: float) -> Warmed:
    """Turn the timed warm-up pass (``request``, validated, and its ``timings``) into a ``Warmed``."""
    assert request.steps is not None
    per_step = timings.denoise_s / request.steps
    per_image = per_step * default_steps + timings.decode_s
    cost = estimate_cost(request, cost_weight)
    per_cost = (timings.denoise_s + timings.decode_s) / cost if cost > 0 else per_image
    return Warmed(model=model, device=device, load_s=load_s, seconds_per_step=per_step,
                  seconds_per_image=per_image, seconds_per_cost=per_cost)
