"""Discord-facing pieces every feature shares: the presenter of job status messages, error replies,
persistent custom ids, image encoding for uploads, member-visible texts, and the endpoints override.

Nothing here knows a particular feature: features pass in what differs (their buttons, their texts).
"""
