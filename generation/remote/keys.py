"""Where the bot and its workers meet in Redis: every key they use, under one namespace, and the client settings.

One namespace (``executor.redis_namespace``) holds one bot's cluster; tests and several bots on one Redis use
their own. SAQ keeps its own keys (``saq:<queue name>:...``, ``saq:job:<queue name>:<job key>``); each worker's
queue name carries the namespace, and job keys are unique per batch attempt.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

# A worker silent for this many heartbeats is dead: its batch moves to another worker.
MISSED_BEATS = 5
# A dequeue blocks at most this long, so a draining worker's idle loop notices the drain within it.
DEQUEUE_BLOCK_S = 1.0


@dataclass(frozen=True)
class Keys:
    namespace: str

    def _key(self, *parts: str) -> str:
        return ":".join(("imagine", self.namespace, *parts))

    @property
    def workers(self) -> str:
        """A set of the ids of workers that have announced themselves (dead ones are removed by the bot)."""
        return self._key("workers")

    @property
    def epoch(self) -> str:
        """A mark the bot sets once: when it is gone, Redis restarted (and forgot everything else too)."""
        return self._key("epoch")

    def worker(self, worker_id: str) -> str:
        """A worker's heartbeat: its capabilities as JSON, expiring unless renewed."""
        return self._key("worker", worker_id)

    def queue_name(self, worker_id: str) -> str:
        """The SAQ queue only this worker takes from."""
        return f"imagine.{self.namespace}.{worker_id}"

    def payload(self, job_key: str) -> str:
        """The batch's requests (input images included), kept out of SAQ's job record, which is re-read often."""
        return self._key("payload", job_key)

    def output(self, job_key: str) -> str:
        """What became of each request of a batch attempt (JSON); written by the worker, read once by the bot."""
        return self._key("out", job_key)

    def image(self, job_key: str, member: int, index: int) -> str:
        """One result PNG, until the bot has taken it (or ``executor.result_ttl_s``)."""
        return self._key("png", job_key, str(member), str(index))

    def cancelled(self, job_key: str) -> str:
        """A set of the batch members cancelled while it runs; the worker checks it between steps."""
        return self._key("cancel", job_key)

    def events(self, job_key: str) -> str:
        """The pub/sub channel of a batch attempt's progress and its end."""
        return self._key("events", job_key)

    @property
    def events_pattern(self) -> str:
        return self._key("events", "*")

    def job_key_of_channel(self, channel: str) -> str:
        return channel.rsplit(":", 1)[-1]

    def bucket(self, kind: str, ids: tuple[int, ...]) -> str:
        """A token bucket's level (the bot's rate limits: ``kind`` user or guild, ``ids`` its key), written by the
        bot after each take and expiring when the bucket would be full again."""
        return self._key("bucket", kind, *map(str, ids))

    @property
    def buckets_pattern(self) -> str:
        return self._key("bucket", "*")

    def bucket_of(self, key: str) -> tuple[str, tuple[int, ...]] | None:
        """``bucket``'s inverse: (kind, ids), or None for a key that is not a bucket's."""
        prefix = self._key("bucket", "")
        if not key.startswith(prefix):
            return None
        kind, *ids = key[len(prefix):].split(":")
        try:
            return kind, tuple(int(part) for part in ids)
        except ValueError:
            return None


def connect(url: str) -> Redis:
    """A client that fails fast when Redis is gone (a couple of quick retries, not redis-py's ten), so an outage
    is noticed, reported and waited out by the caller instead of stalling every command for seconds."""
    return Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=DEQUEUE_BLOCK_S + 10.0,
                          retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
                          health_check_interval=5)


def where(url: str) -> str:
    """``host:port/db`` of a Redis URL, without a password, for messages and logs."""
    rest = url.split("://", 1)[-1]
    return rest.rsplit("@", 1)[-1]
