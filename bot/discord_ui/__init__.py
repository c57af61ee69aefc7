"""Discord-facing pieces the features share: the presenter of job status messages, error replies,
persistent custom ids, image encoding for uploads, member-visible texts about jobs, and the
endpoints override.

A feature passes in what is its own (its buttons, through ``presenter.JobViews``); nothing here
imports a feature. The job texts and custom ids grew up with /imagine and are shared by every
feature that shows jobs.
"""
