"""Operations: Prometheus metrics, the /metrics, /healthz and /readyz endpoint, and the JSON log format.
Discord-free: the bot hands in what needs Discord (its gateway check). See ``docs/architecture.md``.

- ``metrics``: the bot's own registry; job events, the scheduler and storage feed it
- ``runtime``: event-loop lag, GPU memory (only where torch already runs CUDA)
- ``health``: readiness checks (model, database; the gateway's comes from ``bot.app``)
- ``server``: the aiohttp endpoint on the bot's event loop
- ``logs``: ``text`` or ``json`` lines, with the job id on every line about a job
"""

from bot.observability.health import Health, ReadinessCheck, check_all, database_check, model_check
from bot.observability.logs import JobIdFilter, JsonFormatter, json_handler, use_format
from bot.observability.metrics import BotMetrics, GuildLabels, JobMetrics
from bot.observability.server import OperationsServer

__all__ = [
    "BotMetrics", "GuildLabels", "Health", "JobIdFilter", "JobMetrics", "JsonFormatter", "OperationsServer",
    "ReadinessCheck", "check_all", "database_check", "json_handler", "model_check", "use_format",
]
