"""Errors of the Telegram side of the helpdesk.

HelpdeskError           root of this package
├── ConfigError         the configuration is missing, malformed or invalid (exit status 2)
└── BotApiUnreachable   the Bot API at telegram.api_url does not answer at start
"""


class HelpdeskError(Exception):
    """Root of the bot package's errors."""


class ConfigError(HelpdeskError):
    """The configuration cannot be used; the message names the key and the problem."""


class BotApiUnreachable(HelpdeskError):
    """The bot cannot reach the Bot API at start; the message names the URL and the reason."""
