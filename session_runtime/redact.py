"""Which GAM arguments carry secrets, and the argv an audit line may show instead.

GAM reads ``keyword value`` pairs, matching keywords case-insensitively with
``_`` removed (``getArgument``: ``lower().replace('_', '')``). The value after a
secret-carrying keyword is replaced by :data:`REDACTED`; everything else is kept
verbatim, so an unknown command is still audited word for word. The keywords
come from GAM's own parser (gam7 ``gam/__init__.py``):

- user passwords: ``password``, ``notifypassword``, ``notfoundpassword`` (create/update
  user, ``sendemail``, ``create/update alias``-style notify options), whatever the
  ``hashfunction`` keyword (``crypt``, ``sha``, ``md5`` ... take no value, the
  password before or after them is still redacted);
- ``smtpmsa.password`` (send-as), ``password`` of ``add smime``/cse key pairs;
- ``clientsecret`` (OIDC SSO profiles), ``accesstoken``/``idtoken`` (``gam oauth info``),
  ``customerauthtoken``/``transfertoken`` (reseller);
- what the issue names beyond those (``newpassword``, ``oldpassword``, ``secret``, ``token``,
  ``key``, ``privatekey``, ``oauth2*``, ``clientsecret*``), and any keyword ending in
  ``password``, ``secret``, ``token``, ``passphrase``, ``privatekey`` or ``apikey``
  except GAM's flag keywords that only look like one (``changepassword`` ...).

Besides keyword values, three shapes are redacted wherever they appear:
``keyword=value`` / ``keyword:value`` with a secret keyword, JSON arguments
(``json '{"password": ...}'``; secret-named fields at any depth), and anything
that looks like key material or a Google credential (a PEM private key, an OAuth
access or refresh token, a ``GOCSPX-`` client secret, an ``AIza`` API key, the
password of a ``scheme://user:password@host`` URL).
The rule is pure: it never raises and never looks at command output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

__all__ = ["REDACTED", "is_secret_keyword", "redact_argv", "redact_value"]

#: What replaces a secret.
REDACTED = "***"

#: Keywords whose value is a secret, normalised (lower case, no ``_``/``-``).
_SECRET_KEYWORDS = frozenset(
    {
        "password",
        "newpassword",
        "oldpassword",
        "notifypassword",
        "notfoundpassword",
        "smtpmsa.password",
        "secret",
        "clientsecret",
        "token",
        "accesstoken",
        "idtoken",
        "refreshtoken",
        "customerauthtoken",
        "transfertoken",
        "authtoken",
        "key",
        "privatekey",
        "apikey",
        "passphrase",
        "yubikeypin",
        "oauth2",
    }
)
_SECRET_SUFFIXES = ("password", "secret", "token", "passphrase", "privatekey", "apikey")
_SECRET_PREFIXES = ("clientsecret", "oauth2", "privatekey")
#: GAM keywords that end like a secret keyword but take no secret value.
_NOT_SECRET = frozenset(
    {
        "changepassword",
        "changepasswordatnextlogin",
        "setchangepasswordoncreate",
        "changepasswordurl",
        "ignorenullpassword",
        "lograndompassword",
        "logpassword",
        "showsecret",
        "nopassword",
    }
)

_PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----", re.IGNORECASE)
#: Google credential shapes, replaced inside any argument.
_CREDENTIAL_PATTERNS = (
    re.compile(r"ya29\.[0-9A-Za-z_\-.]+"),  # OAuth 2 access token
    re.compile(r"1//[0-9A-Za-z_\-]{20,}"),  # OAuth 2 refresh token
    re.compile(r"GOCSPX-[0-9A-Za-z_\-]+"),  # OAuth client secret
    re.compile(r"AIza[0-9A-Za-z_\-]{35}"),  # API key
)
#: ``scheme://user:password@host``: the password part.
_URL_PASSWORD = re.compile(r"(://[^/\s:@]+):[^/\s@]+@")
_ASSIGNMENT = re.compile(r"^(?P<key>[^=:\s]+)(?P<sep>[=:])(?P<value>.+)$", re.DOTALL)


def _normalise(word: str) -> str:
    return word.strip().lstrip("-").lower().replace("_", "").replace("-", "")


def is_secret_keyword(word: str) -> bool:
    """Whether the argument after ``word`` is a secret (GAM's keyword matching).

    Args:
        word: one argv entry, as typed (any case, ``_`` or ``-`` anywhere).
    """
    key = _normalise(word)
    if not key or key in _NOT_SECRET:
        return False
    return (
        key in _SECRET_KEYWORDS
        or key.endswith(_SECRET_SUFFIXES)
        or key.startswith(_SECRET_PREFIXES)
        # ``smtpmsa.password`` and friends: the last dotted part decides.
        or (("." in key) and is_secret_keyword(key.rsplit(".", 1)[1]))
    )


def _redact_json(value: object) -> object:
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_keyword(k) else _redact_json(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact_json(v) for v in value]
    if isinstance(value, str):
        return redact_value(value)
    return value


def _mentions_secret_key(text: str) -> bool:
    return any(is_secret_keyword(m) for m in re.findall(r"[A-Za-z0-9_.\-]+", text))


def redact_value(arg: str) -> str:
    """Return one argument with key material, credentials and secret assignments removed.

    Args:
        arg: one argv entry that is not itself the value of a secret keyword.
    """
    if _PEM_PRIVATE_KEY.search(arg):
        return REDACTED
    stripped = arg.strip()
    if stripped[:1] in {"{", "["}:
        try:
            parsed = json.loads(stripped)
        except ValueError:
            # Broken JSON cannot be redacted field by field: drop it if it names a secret.
            return REDACTED if _mentions_secret_key(stripped) else _scrub(arg)
        return json.dumps(_redact_json(parsed), separators=(",", ":"), ensure_ascii=False)
    match = _ASSIGNMENT.match(arg)
    if match and is_secret_keyword(match["key"]):
        return f"{match['key']}{match['sep']}{REDACTED}"
    return _scrub(arg)


def _scrub(arg: str) -> str:
    for pattern in _CREDENTIAL_PATTERNS:
        arg = pattern.sub(REDACTED, arg)
    return _URL_PASSWORD.sub(rf"\g<1>:{REDACTED}@", arg)


def redact_argv(argv: Sequence[str] | Iterable[str]) -> list[str]:
    """Return ``argv`` with every secret replaced by :data:`REDACTED`.

    The value after a secret keyword is replaced whatever it is (a ``~column``
    of ``gam csv``, ``random``). When that value is itself a secret keyword
    (``password newpassword X``: a typo, or a password that happens to be one),
    the argument after it is hidden too: erring towards hiding costs a word of
    the audit line, the other way costs a password.

    Args:
        argv: GAM's arguments (with or without a leading ``gam``).
    """
    out: list[str] = []
    secret_next = False
    for arg in argv:
        if secret_next:
            out.append(REDACTED)
            secret_next = is_secret_keyword(arg)
            continue
        out.append(redact_value(arg))
        secret_next = is_secret_keyword(arg)
    return out
