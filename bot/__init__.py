"""The Discord side of /imagine. ``__main__`` composes it, ``app`` is the client, ``core`` the
Discord-free base, ``scheduler`` and ``storage`` the queue and the database, ``discord_ui`` the shared
Discord pieces, ``features`` one package per capability (see docs/architecture.md).

Importing ``bot``, ``bot.core``, ``bot.scheduler`` or ``bot.storage`` imports neither discord nor torch.
"""
