"""config.yaml numbers: nothing infinite or NaN, every rate, window, interval and weight in a sane range.

Before these bounds, ``window_s: .inf`` or a tiny ``amount`` over a huge window passed validation and
then broke every later request of that server (ZeroDivisionError in the token bucket, OverflowError
formatting the retry time). Now the file is refused, naming the key, its line and the allowed range."""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Annotated, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from bot.core.config import (
    MONTH_S,
    BotConfig,
    Bucket,
    DiscordConfig,
    GuildConfig,
    Limits,
    SchedulerConfig,
    parse_config,
)
from bot.core.config_store import ConfigStore
from bot.core.errors import RateLimited
from generation.config import ExecutorConfig, ModelConfig
from generation.errors import ConfigError
from tests.scheduler_helpers import OPEN_LIMITS, make_job
from tests.test_scheduler_limits import build

CASES = [
    # (yaml, key as reported, what is said)
    ("limits:\n  user_rate: {amount: 1, window_s: .inf}\n", "limits.user_rate.window_s (line 2)",
     "inf is not a finite number; allowed: 1 to 2592000 s (30 days)"),
    ("limits:\n  user_rate: {amount: .nan}\n", "limits.user_rate.amount (line 2)",
     "nan is not a finite number; allowed: 0.001 to 1000000"),
    ("limits:\n  guild_rate:\n    amount: 1.0e-300\n    window_s: 1.0e+300\n", "limits.guild_rate.amount (line 3)",
     "1e-300 is out of range; allowed: 0.001 to 1000000"),
    ("limits:\n  guild_rate:\n    amount: 5\n    window_s: 1.0e+300\n", "limits.guild_rate.window_s (line 4)",
     "is out of range; allowed: 1 to 2592000 s (30 days)"),
    ("limits:\n  user_rate: {amount: 2, burst: -.inf}\n", "limits.user_rate.burst (line 2)",
     "-inf is not a finite number; allowed: 0.001 to 1000000"),
    ("limits:\n  max_queued_per_user: 1.0e+400\n", "limits.max_queued_per_user (line 2)",
     "inf is not a finite number; allowed: 0 to 100000"),
    ('guilds:\n  "42":\n    weight: .inf\n', "guilds.42.weight (line 3)",
     "inf is not a finite number; allowed: 0.01 to 1000"),
    ('guilds:\n  "42":\n    limits:\n      daily_images_per_user: 99999999999\n',
     "guilds.42.limits.daily_images_per_user (line 4)", "is out of range; allowed: 0 to 1000000"),
    ("scheduler:\n  reload_poll_s: .inf\n", "scheduler.reload_poll_s (line 2)",
     "inf is not a finite number; allowed: 0.05 to 3600 s"),
    ("scheduler:\n  position_update_s: -1\n", "scheduler.position_update_s (line 2)",
     "-1 is out of range; allowed: 0 to 600 s"),
    ("scheduler:\n  batch_window_ms: 60000\n", "scheduler.batch_window_ms (line 2)",
     "60000 is out of range; allowed: 0 to 5000 ms"),
    ("scheduler:\n  max_wait_s: .inf\n", "scheduler.max_wait_s (line 2)",
     "inf is not a finite number; allowed: 1 to 86400 s (a day)"),
    ("scheduler:\n  default_guild_weight: 0\n", "scheduler.default_guild_weight (line 2)",
     "0 is out of range; allowed: 0.01 to 1000"),
    ("scheduler:\n  eta_smoothing: .nan\n", "scheduler.eta_smoothing (line 2)",
     "nan is not a finite number; allowed: 0.01 to 1"),
    ("bot:\n  progress_interval_s: 'inf'\n", "bot.progress_interval_s (line 2)",
     "inf is not a finite number; allowed: 0 to 600 s"),
    ("models:\n  default: tiny\n  tiny: {source: 'builtin:tiny', cost_weight: .inf}\n",
     "models.tiny.cost_weight (line 3)", "inf is not a finite number; allowed: 0.001 to 1000"),
    ("models:\n  default: tiny\n  tiny: {source: 'builtin:tiny', max_guidance: .nan}\n",
     "models.tiny.max_guidance (line 3)", "nan is not a finite number; allowed: 0 to 30"),
    ("executor:\n  max_batch_images: .inf\n", "executor.max_batch_images (line 2)",
     "inf is not a finite number; allowed: 1 to 64"),
]


@pytest.mark.parametrize(("text", "key", "said"), CASES, ids=[case[1].split(" ")[0] for case in CASES])
def test_infinite_nan_and_out_of_range_numbers_are_refused_naming_key_line_and_range(text: str, key: str,
                                                                                    said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "config.yaml")
    message = str(caught.value)
    assert f"{key}: " in message and said in message, message


def _numbers(model: type[BaseModel]) -> list[str]:
    def numeric(annotation: object) -> bool:
        if get_origin(annotation) in (Union, UnionType, Annotated):
            return any(numeric(arg) for arg in get_args(annotation))
        return annotation in (int, float)

    return [name for name, field in model.model_fields.items() if numeric(field.annotation)]


WHERE = {  # a YAML frame for one key of each model: {} is where the key goes
    Bucket: "limits:\n  user_rate: {amount: 1, KEY: .inf}\n",
    Limits: "limits:\n  KEY: .inf\n",
    GuildConfig: 'guilds:\n  "42":\n    KEY: .inf\n',
    SchedulerConfig: "scheduler:\n  KEY: .inf\n",
    BotConfig: "bot:\n  KEY: .inf\n",
    DiscordConfig: "discord:\n  KEY: .inf\n",
    ModelConfig: "models:\n  default: t\n  t: {source: 'builtin:tiny', KEY: .inf}\n",
    ExecutorConfig: "executor:\n  KEY: .inf\n",
}


def test_no_number_anywhere_in_the_file_may_be_infinite() -> None:
    """Every number key of every section, written as .inf, is refused with its range: none was forgotten."""
    checked = []
    for model, frame in WHERE.items():
        for name in _numbers(model):
            if model is Bucket and name == "amount":
                frame = "limits:\n  user_rate: {KEY: .inf}\n"
            with pytest.raises(ConfigError) as caught:
                parse_config(frame.replace("KEY", name))
            assert f".{name} (line " in str(caught.value) and "inf is not a finite number; allowed: " in str(
                caught.value), str(caught.value)
            checked.append(f"{model.__name__}.{name}")
    assert len(checked) >= 30, checked


async def test_the_slowest_bucket_allowed_still_answers_with_a_finite_retry_time() -> None:
    """The bounds keep every refusal readable: the slowest bucket the file may hold (the least amount over
    the longest window) says when to retry instead of crashing the request."""
    slowest = Bucket(amount=0.001, window_s=MONTH_S, burst=1)
    scheduler, _, _ = build(OPEN_LIMITS.model_copy(update={"user_rate": slowest}))
    scheduler.submit(make_job())
    with pytest.raises(RateLimited) as caught:
        scheduler.submit(make_job())
    assert caught.value.retry_after is not None and caught.value.retry_after == pytest.approx(MONTH_S / 0.001)
    assert "try again in" in str(caught.value) and " h" in str(caught.value)


def test_a_reload_with_an_infinite_value_keeps_the_running_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("limits:\n  user_rate: {amount: 6, window_s: 60}\n")
    store = ConfigStore(path)
    path.write_text("limits:\n  user_rate: {amount: 6, window_s: .inf}\n")
    with pytest.raises(ConfigError, match=r"limits.user_rate.window_s \(line 2\): inf is not a finite number"):
        store.reload()
    assert store.current.limits.user_rate == Bucket(amount=6, window_s=60)
