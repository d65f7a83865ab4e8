"""Who is on a connection: its id, the client address and the user the server named.

The proxy sets ``X-Real-IP`` to its own TCP peer, replacing whatever the
client sent, so that is the address recorded as ``client``: nobody on the
other side of the proxy can choose it. ``X-Forwarded-For`` is what the client
and any proxies in front *claimed*, with our proxy's peer appended; its
entries are kept apart as ``forwarded_for`` (worth reading behind a load
balancer, never proof). Without the proxy the TCP peer is the client. Only
values that parse as IP addresses are taken, so a header can never smuggle
text into an audit line. The user comes from :data:`~session_runtime.naming.HEADER_USER`
when it is one printable value of bounded length; otherwise it is ignored.
"""

from __future__ import annotations

import ipaddress
import uuid

from websockets.datastructures import Headers

from session_runtime import naming
from session_runtime.agent.observe import ClientInfo

__all__ = [
    "MAX_FORWARDED",
    "MAX_USER_LENGTH",
    "client_address",
    "client_info",
    "forwarded_for",
    "new_connection_id",
    "user_name",
]

#: Longest user name taken from the header (an email address is far shorter).
MAX_USER_LENGTH = 256
#: ``X-Forwarded-For`` entries kept (the last ones: the hops nearest the proxy).
MAX_FORWARDED = 8


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
    """Return the address our proxy saw (``X-Real-IP``), else the TCP peer.

    ``X-Forwarded-For`` never decides it: without our proxy in between, every
    entry of it is the connecting party's own say-so.

    Args:
        headers: the handshake request's headers.
        peer: the TCP peer as ``host:port`` (or ``unknown``).
    """
    real = headers.get_all("X-Real-IP")
    address = _ip(real[0]) if len(real) == 1 else None
    return address if address is not None else peer


def forwarded_for(headers: Headers) -> tuple[str, ...]:
    """Return the IP addresses ``X-Forwarded-For`` claims, in order (at most the last few).

    Args:
        headers: the handshake request's headers.
    """
    entries = [e for value in headers.get_all("X-Forwarded-For") for e in value.split(",")]
    found = [a for a in (_ip(e) for e in entries) if a is not None]
    return tuple(found[-MAX_FORWARDED:])


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
        forwarded_for=forwarded_for(headers),
    )
