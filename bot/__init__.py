"""The Discord side of /imagine: configuration, the scheduler and (later) the cogs.

Importing ``bot`` or ``bot.scheduler`` imports neither discord nor torch.
"""
