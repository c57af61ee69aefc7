"""The operations endpoint: an aiohttp server on the bot's own event loop, started only when
``observability.http_port`` is set.

- ``GET /metrics``: Prometheus text format (``metrics.BotMetrics``);
- ``GET /healthz``: 200 while the process answers at all;
- ``GET /readyz``: 200 when every readiness check passes, else 503; the JSON body names each part and how it
  stands, and lists the failed ones under ``failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from bot.observability.health import ReadinessCheck, check_all
from bot.observability.metrics import BotMetrics

_log = logging.getLogger(__name__)


class OperationsServer:
    def __init__(self, *, host: str, port: int, metrics: BotMetrics, checks: Sequence[ReadinessCheck]) -> None:
        self.host, self.port = host, port
        self._metrics = metrics
        self._checks = tuple(checks)
        self._runner: web.AppRunner | None = None

    async def start(self) -> bool:
        """Serve; False (logged) when the address cannot be bound: the bot runs on without the endpoint."""
        app = web.Application()
        app.router.add_get("/metrics", self._scrape)
        app.router.add_get("/healthz", self._alive)
        app.router.add_get("/readyz", self._ready)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            _log.error("could not serve /metrics, /healthz and /readyz on %s:%d (observability.http_port): %s; "
                       "the bot runs without them", self.host, self.port, exc)
            return False
        self._runner = runner
        self._metrics.start()
        _log.info("operations endpoint: http://%s:%d/metrics, /healthz and /readyz", self.host, self.port)
        return True

    async def stop(self) -> None:
        await self._metrics.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _scrape(self, _request: web.Request) -> web.Response:
        await self._metrics.refresh()
        # The classic text format (0.0.4), which every Prometheus version reads; the metric names need no escaping.
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

    async def _alive(self, _request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def _ready(self, _request: web.Request) -> web.Response:
        answers = await check_all(self._checks)
        failed = [name for name, health in answers.items() if not health.ok]
        body = {"ready": not failed, "failed": failed,
                "checks": {name: {"ok": health.ok, "detail": health.detail} for name, health in answers.items()}}
        return web.json_response(body, status=503 if failed else 200)
