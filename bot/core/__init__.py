"""Discord-free, torch-free building blocks every other part of the bot stands on.

``config`` (config.yaml's schema and the reloading store), ``errors`` (the one exception tree),
``identity`` (who asks, and the one owner-or-moderator check), ``events`` (fan-out of job events to
many subscribers) and ``text`` (formatting shared by every message). Nothing here imports
``discord``, ``torch`` or another part of ``bot``; an import contract in ``make test`` holds that.
"""
