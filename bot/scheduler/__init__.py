"""Admission, fair ordering and batching in front of the GPU executor; imports ``bot.core`` only of the bot,
and neither discord nor torch."""

from bot.scheduler.clock import Clock, SimulatedClock, SystemClock
from bot.scheduler.core import ConfigSource
from bot.scheduler.fairqueue import FairQueue
from bot.scheduler.jobs import TERMINAL_STATES, Job, JobEvents, JobListener, JobState, NullListener
from bot.scheduler.limits import DailyQuota, TokenBucket, quota_period
from bot.scheduler.scheduler import DailyImages, QueueEntry, QueueSnapshot, QuotaLeft, Scheduler

__all__ = [
    "TERMINAL_STATES", "Clock", "ConfigSource", "DailyImages", "DailyQuota", "FairQueue", "Job", "JobEvents",
    "JobListener", "JobState", "NullListener", "QueueEntry", "QueueSnapshot", "QuotaLeft", "Scheduler",
    "SimulatedClock",
    "SystemClock", "TokenBucket", "quota_period",
]
