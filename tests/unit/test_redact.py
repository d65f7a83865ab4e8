"""The redaction rule over real GAM command lines: no secret survives, nothing else changes."""

from __future__ import annotations

import json
import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_runtime.redact import REDACTED, is_secret_keyword, redact_argv, redact_value

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"

#: (GAM command line, the secret values it carries). Secrets first, middle and last,
#: keywords in every case GAM accepts (it lowercases and drops ``_``).
CORPUS: list[tuple[str, list[str]]] = [
    ("gam create user alice@example.com password S3cret!one", ["S3cret!one"]),
    ("gam create user bob@example.com firstname Bob lastname Smith password 'p w 2'", ["p w 2"]),
    ("gam update user carol@example.com password Hunter22 changepassword on", ["Hunter22"]),
    ("gam update user carol@example.com PASSWORD Upper1 org /Staff", ["Upper1"]),
    ("gam update user dan@example.com Password MiXeD2 sha", ["MiXeD2"]),
    (
        "gam update user dan@example.com crypt password $6$rounds=10000$abc$def",
        ["$6$rounds=10000$abc$def"],
    ),
    ("gam update user erin@example.com hashfunction md5 password 5f4dcc3b5aa7", ["5f4dcc3b5aa7"]),
    ("gam create user f@example.com password random notify f@home.org notifypassword Np1", ["Np1"]),
    ("gam create user g@example.com notify_password NP_under password Pw9", ["NP_under", "Pw9"]),
    ("gam update users staff.csv notfoundpassword Nf0und createifnotfound", ["Nf0und"]),
    ("gam user h@example.com update password newpassword Changed1", ["Changed1"]),
    ("gam update user i@example.com oldpassword Old1 newpassword New1", ["Old1", "New1"]),
    ("gam update user i@example.com new_password Under1", ["Under1"]),
    (
        "gam user j@example.com add sendas j@alias.org name J smtpmsa.host smtp.alias.org "
        "smtpmsa.port 587 smtpmsa.username j smtpmsa.password SmtpPw1 "
        "smtpmsa.securitymode starttls",
        ["SmtpPw1"],
    ),
    ("gam user k@example.com add smime file cert.p12 password P12pass default", ["P12pass"]),
    (
        "gam create inboundssoprofile name OIDC clientid abc.apps clientsecret Csec123 issuer x",
        ["Csec123"],
    ),
    (
        "gam oauth info accesstoken ya29.a0AfH6SMBxyz idtoken eyJhbGciOiJSUzI1NiJ9.e30.sig",
        [
            "ya29.a0AfH6SMBxyz",
            "eyJhbGciOiJSUzI1NiJ9.e30.sig",
        ],
    ),
    ("gam create resoldcustomer example.com customerauthtoken CAT-9 contact x", ["CAT-9"]),
    ("gam print resoldsubscriptions transfertoken TT-7", ["TT-7"]),
    ("gam update chromepolicy key Wk3y value x", ["Wk3y"]),
    ("gam config SECRET s1 token t1 privatekey pk1 apikey ak1", ["s1", "t1", "pk1", "ak1"]),
    ("gam config client_secret Cs2 oauth2_txt /tmp/oauth2.txt", ["Cs2", "/tmp/oauth2.txt"]),
    ("gam create chromenetwork wifi passphrase WifiPass1 ssid Office", ["WifiPass1"]),
    # A secret keyword as the value: what follows is hidden too.
    ("gam update user l@example.com password password Pw2", ["Pw2"]),
    ("gam update user l@example.com password notify", []),
    # Assignments, JSON and key material wherever they appear.
    ("gam some future command password=AssignPw1 x", ["AssignPw1"]),
    ("gam other thing --api-key:AK-77", ["AK-77"]),
    (
        "gam update user m@example.com json "
        '\'{"password": "JsonPw1", "name": {"givenName": "M"}}\'',
        ["JsonPw1"],
    ),
    (
        'gam create user n@example.com json \'{"users": [{"hashFunction": "crypt", '
        '"password": "Deep1", "client_secret": "Deep2"}]}\'',
        ["Deep1", "Deep2"],
    ),
    ('gam create user o@example.com json \'{"password": "Broken1", \'', ["Broken1"]),
    (f"gam upload sakey {shlex.quote(PEM)}", ["MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"]),
    ("gam print users query token:ya29.xyzABC_def-123 fields x", ["ya29.xyzABC_def-123"]),
    (
        "gam info x 1//0gLongRefreshTokenValue_123456 GOCSPX-abcDEF123_x",
        [
            "1//0gLongRefreshTokenValue_123456",
            "GOCSPX-abcDEF123_x",
        ],
    ),
    (
        "gam info y AIzaSyA1234567890abcdefghijklmnopqrstuv",
        ["AIzaSyA1234567890abcdefghijklmnopqrstuv"],
    ),
    ("gam user q@example.com add sendas x url https://q:UrlPw9@smtp.example.com", ["UrlPw9"]),
    # csv substitution: the column reference is redacted too (never guessed to be safe).
    ("gam csv users.csv gam update user ~email password ~Password", ["~Password"]),
    # The secret keyword last: nothing follows, nothing to hide.
    ("gam update user p@example.com password", []),
]


@pytest.mark.parametrize(("line", "secrets"), CORPUS, ids=[c[0][:60] for c in CORPUS])
def test_no_secret_value_survives_redaction(line: str, secrets: list[str]) -> None:
    redacted = redact_argv(shlex.split(line))
    text = json.dumps(redacted)
    for secret in secrets:
        assert secret not in text
        assert json.dumps(secret)[1:-1] not in text
    assert len(redacted) == len(shlex.split(line))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "gam create user a@example.com firstname A password X1 org /S",
            "gam create user a@example.com firstname A password *** org /S",
        ),
        (
            "gam update user a@example.com changepassword on password X2",
            "gam update user a@example.com changepassword on password ***",
        ),
        (
            "gam update user a@example.com crypt Password X3 suspended off",
            "gam update user a@example.com crypt Password *** suspended off",
        ),
        ("gam print users fields primaryemail", "gam print users fields primaryemail"),
        ("gam info domain", "gam info domain"),
        ("gam x password=Y", "gam x password=***"),
    ],
)
def test_everything_but_the_secret_is_kept_verbatim(line: str, expected: str) -> None:
    assert redact_argv(shlex.split(line)) == shlex.split(expected)


def test_json_arguments_keep_their_other_fields() -> None:
    arg = '{"password": "P", "name": {"givenName": "Ann"}, "emails": ["a@b"]}'
    out = json.loads(redact_value(arg))
    assert out == {"password": REDACTED, "name": {"givenName": "Ann"}, "emails": ["a@b"]}


@pytest.mark.parametrize(
    "word",
    [
        "password",
        "PASSWORD",
        "Pass_Word",
        "notifypassword",
        "smtpmsa.password",
        "clientSecret",
        "client_secrets_json",
        "accesstoken",
        "oauth2",
        "--password",
        "privatekey",
        "KEY",
    ],
)
def test_secret_keywords_are_recognised_in_any_case(word: str) -> None:
    assert is_secret_keyword(word)


@pytest.mark.parametrize(
    "word",
    [
        "changepassword",
        "ChangePasswordAtNextLogin",
        "showsecret",
        "user",
        "tokens",
        "keyfield",
        "sha",
        "crypt",
        "hashfunction",
        "",
        "-",
    ],
)
def test_flags_and_ordinary_words_are_not_secret_keywords(word: str) -> None:
    assert not is_secret_keyword(word)


@given(st.lists(st.text(max_size=20), max_size=12))
def test_redaction_never_raises_and_keeps_the_length(argv: list[str]) -> None:
    out = redact_argv(argv)
    assert len(out) == len(argv)


@given(
    before=st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), max_size=5),
    keyword=st.sampled_from(["password", "PassWord", "new_password", "clientsecret", "token"]),
    secret=st.text(min_size=4, max_size=30).filter(lambda s: s.strip() and "*" not in s),
    after=st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), max_size=5),
)
def test_a_keyword_value_is_hidden_in_any_position(
    before: list[str], keyword: str, secret: str, after: list[str]
) -> None:
    # A word before the keyword that is itself a secret keyword would swallow it: skip those.
    if before and is_secret_keyword(before[-1]):
        return
    out = redact_argv([*before, keyword, secret, *after])
    assert out[len(before) + 1] == REDACTED
