"""The ``contests:`` config section: what one try of a prompt contest may cost, and how many a round allows.

It exists at the top level (every server's defaults) and under ``guilds.<id>.contests`` (that server's
overrides: a key written there replaces the default, as in ``limits``). Contest entries go through the
same admission as /imagine (rates, queue caps, daily images); these keys cap contests on top of that,
so a server can keep contests cheaper than what its members may do with /imagine. The rules that use
them live in ``bot.features.contests``; this module only says what a valid setting is.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from generation.configfile import within


class ContestsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    images_per_try: Annotated[int, within(1, 4)] = Field(
        default=2, description="images one /contest enter makes to pick from (a same-seed round makes 1)")
    max_cost_per_entry: Annotated[float, within(0.001, 1000)] | None = Field(
        default=4.0, description="the most GPU work one /contest enter may cost, all its images together, in "
                                 "cost units; a round whose rules cost more is refused when it starts (null: no cap)")
    max_tries_per_member: Annotated[int, within(1, 1000)] | None = Field(
        default=10, description="/contest enter runs per member per round (null: no cap)")
    max_open_per_guild: Annotated[int, within(1, 50)] = Field(
        default=3, description="rounds that may run at once in one server")


def resolve_contests(defaults: ContestsConfig, override: ContestsConfig | None) -> ContestsConfig:
    """A server's contest settings: the defaults, with each key the server's section writes replacing them."""
    if override is None or not override.model_fields_set:
        return defaults
    return defaults.model_copy(update={name: getattr(override, name) for name in override.model_fields_set})
