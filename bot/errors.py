"""Errors of the Telegram side of the helpdesk.

HelpdeskError       root of this package
└── ConfigError     the configuration is missing, malformed or invalid (exit status 2)
"""


class HelpdeskError(Exception):
    """Root of the bot package's errors."""


class ConfigError(HelpdeskError):
    """The configuration cannot be used; the message names the key and the problem."""
