"""Scale-out: GPU worker processes that take batches from a SAQ queue on Redis, and the bot's executor for them.

One worker process per GPU (``python -m generation.worker``, ``worker.py`` here) owns a ``Runner`` and serves a
SAQ queue of its own. The bot's ``RemoteExecutor`` (``executor.py``, torch-free) watches the workers'
heartbeats (``pool.py``), gives each batch to one free worker (the one with the batch's model loaded, if any)
and waits for its outcome; ``wire.py`` is the format both sides read, ``keys.py`` the Redis key layout.
"""
