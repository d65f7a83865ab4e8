"""Session tokens derived from one key, so no server replica has to read a Secret to get one.

A session's token is ``HMAC-SHA256(key, "<namespace>/<session id>/<pod uid>")``,
base64url without padding. The creating replica writes it into the session's
token Secret (which the pod mounts and the agent reads); every other replica
computes the same value from the pod it lists. Why: the runtime's identity then
needs no ``get``/``list`` on Secrets at all (only ``create``), so it cannot read
``gam-credentials`` or anything else. The pod uid makes each incarnation of an
id a new token: a re-created session never accepts its predecessor's token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["derive_token"]


def derive_token(key: bytes, namespace: str, session_id: str, pod_uid: str) -> str:
    """Return the bearer token of one session pod (never logged).

    Args:
        key: the runtime's token key (at least 32 bytes of randomness).
        namespace: the session namespace.
        session_id: the session id.
        pod_uid: the uid the API server gave the session's pod.

    Raises:
        ValueError: the key is shorter than 16 bytes, or the uid is empty.
    """
    if len(key) < 16:
        raise ValueError("the session token key must be at least 16 bytes")
    if not pod_uid:
        raise ValueError("a session token needs the pod's uid")
    message = f"{namespace}/{session_id}/{pod_uid}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
