"""Session ids: the one rule every other module imports.

A session id becomes a DNS label (the pod's ``hostname``), part of resource
names, and the only variable part of the proxy's upstream host. Keeping it to
one lower-case DNS label is what makes the proxy safe from SSRF: nothing that
matches this rule can name another host, contain a dot, or escape a path.
"""

from __future__ import annotations

import re
import secrets

from session_runtime.errors import InvalidSessionIdError

__all__ = [
    "DEFAULT_SESSION_ID",
    "SESSION_ID_MAX_LENGTH",
    "SESSION_ID_PATTERN",
    "SESSION_ID_REGEX",
    "SESSION_ID_RULE",
    "generate_session_id",
    "is_valid_session_id",
    "validate_session_id",
]

#: The regex body without anchors, so nginx and other matchers can embed it.
SESSION_ID_PATTERN = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
SESSION_ID_REGEX = re.compile(rf"^{SESSION_ID_PATTERN}$")
SESSION_ID_MAX_LENGTH = 63
SESSION_ID_RULE = (
    "a session id is one DNS label: 1-63 characters, lower-case letters, digits and '-', "
    "starting and ending with a letter or digit"
)
#: The always-available session declared by the Pulumi program and the local stack.
DEFAULT_SESSION_ID = "default"


def is_valid_session_id(value: object) -> bool:
    """Return True when ``value`` is a string that satisfies the id rule."""
    return isinstance(value, str) and SESSION_ID_REGEX.fullmatch(value) is not None


def validate_session_id(value: object) -> str:
    """Return ``value`` unchanged if it is a valid session id.

    Args:
        value: the candidate id, from any edge (CLI, HTTP path, environment).

    Raises:
        InvalidSessionIdError: naming the rule and showing the rejected value.
    """
    if not is_valid_session_id(value):
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise InvalidSessionIdError(
            f"Invalid session id {shown}",
            hint=SESSION_ID_RULE,
        )
    assert isinstance(value, str)  # narrowed by is_valid_session_id  # noqa: S101
    return value


def generate_session_id() -> str:
    """Return a fresh random id: ``s-`` and 16 hex digits (a valid DNS label)."""
    return f"s-{secrets.token_hex(8)}"
