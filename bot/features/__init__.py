"""One package per feature, each a discord.py extension (``async def setup(bot)``) listed in
``bot.app.FEATURES``. Features never import each other: they meet through ``bot.core`` (identity,
events, text) and the ``bot.services.Services`` that ``setup`` reads off the bot."""
