"""Who is on a connection: its id, the client address and the user the server named.

The proxy sets ``X-Real-IP`` (its own peer) and appends to ``X-Forwarded-For``
(whose first entry is the original client when the server in front of it
forwards one); without them, the TCP peer is the client. Only values that
parse as IP addresses are taken, so a header can never smuggle text into an
audit line. The user comes from :data:`~session_runtime.naming.HEADER_USER`
when it is one printable value of bounded length; otherwise it is ignored.
"""

from __future__ import annotations

import ipaddress
import uuid

from websockets.datastructures import Headers

from session_runtime import naming
from session_runtime.agent.observe import ClientInfo

__all__ = ["MAX_USER_LENGTH", "client_address", "client_info", "new_connection_id", "user_name"]

#: Longest user name taken from the header (an email address is far shorter).
MAX_USER_LENGTH = 256


def new_connection_id() -> str:
    """Return a fresh id for a connection (audit lines of one connection share it)."""
    return uuid.uuid4().hex[:16]


def _ip(value: str) -> str | None:
    text = value.strip()
    if text.startswith("[") and "]" in text:  # "[v6]:port"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "v4:port"
        text = text.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def client_address(headers: Headers, peer: str) -> str:
    """Return the client's address: first ``X-Forwarded-For`` entry, ``X-Real-IP``, or the peer.

    Args:
        headers: the handshake request's headers.
        peer: the TCP peer as ``host:port`` (or ``unknown``).
    """
    for name in ("X-Forwarded-For", "X-Real-IP"):
        values = headers.get_all(name)
        if values:
            address = _ip(values[0].split(",", 1)[0])
            if address is not None:
                return address
    return peer


def user_name(headers: Headers) -> str | None:
    """Return the user the server named in :data:`~session_runtime.naming.HEADER_USER`, if valid.

    Args:
        headers: the handshake request's headers.
    """
    values = headers.get_all(naming.HEADER_USER)
    if len(values) != 1:
        return None
    user = values[0].strip()
    if not user or len(user) > MAX_USER_LENGTH or not user.isprintable():
        return None
    return user


def client_info(headers: Headers, peer: str, connection_id: str | None = None) -> ClientInfo:
    """Describe one connection for audit lines and metrics.

    Args:
        headers: the handshake request's headers.
        peer: the TCP peer as ``host:port``.
        connection_id: the connection's id; a new one when omitted.
    """
    return ClientInfo(
        connection_id=connection_id or new_connection_id(),
        client=client_address(headers, peer),
        user=user_name(headers),
    )
