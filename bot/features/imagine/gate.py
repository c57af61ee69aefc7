"""The content gate: a request checked against its server's content rules before anything is stored or downloaded.

A match is refused privately (``ContentBlocked``: the rule's id, never the term), counted per server and rule in
``ContentStats`` (for metrics) and logged with the rule, the server and the member, never the prompt. A new
request is checked as the member typed it (the prompt with its flags, and the negative option); a follow-up
(🔄, U, V) checks its stored prompt and negative prompt again under today's rules, without the server's default
negative prompt that the bot added (a default of "nude" must not trip a rule that blocks it).
"""

from __future__ import annotations

import logging

from bot.core.config import AppConfig
from bot.core.content import ContentRules, ContentStats, GuildContent
from bot.core.errors import ContentBlocked, PromptTooLong
from bot.core.identity import Requester

_log = logging.getLogger(__name__)


class ContentGate:
    def __init__(self, stats: ContentStats, rules: ContentRules | None = None) -> None:
        self._stats = stats
        self._rules = rules or ContentRules()

    def content_for(self, config: AppConfig, requester: Requester) -> GuildContent:
        """The requester's server's effective content settings (compiled once per config)."""
        return self._rules.for_guild(config, requester.guild_id)

    def check(self, content: GuildContent, requester: Requester, prompt: str, negative: str) -> None:
        """Raise ContentBlocked for the first rule that the prompt, then the negative prompt, breaks."""
        for text, is_negative in ((prompt, False), (negative, True)):
            rule_id = content.matcher.first_match(text)
            if rule_id is None:
                continue
            self._stats.count(requester.guild_id, rule_id)
            _log.info("content rule %s refused a request: guild %s, user %s", rule_id, requester.guild_id,
                      requester.user_id)
            raise ContentBlocked(rule_id, negative=is_negative, in_dm=requester.in_dm)

    @staticmethod
    def check_length(content: GuildContent, requester: Requester, prompt: str) -> None:
        """Raise PromptTooLong when ``prompt`` (without its flags) is longer than the server allows."""
        if len(prompt) > content.max_prompt_chars:
            raise PromptTooLong(len(prompt), content.max_prompt_chars, in_dm=requester.in_dm)
