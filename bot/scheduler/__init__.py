"""Admission, fair ordering and batching in front of the GPU executor; imports neither discord nor torch."""

from bot.scheduler.clock import Clock, SimulatedClock, SystemClock
from bot.scheduler.core import ConfigSource
from bot.scheduler.fairqueue import FairQueue
from bot.scheduler.jobs import TERMINAL_STATES, Actor, Job, JobListener, JobState, NullListener
from bot.scheduler.limits import DailyQuota, TokenBucket, quota_period
from bot.scheduler.scheduler import QueuedJob, QueueSnapshot, Scheduler

__all__ = [
    "TERMINAL_STATES", "Actor", "Clock", "ConfigSource", "DailyQuota", "FairQueue", "Job", "JobListener",
    "JobState", "NullListener", "QueueSnapshot", "QueuedJob", "Scheduler", "SimulatedClock", "SystemClock",
    "TokenBucket", "quota_period",
]
