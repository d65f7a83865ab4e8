import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_runtime.errors import InvalidSessionIdError
from session_runtime.ids import (
    SESSION_ID_REGEX,
    generate_session_id,
    is_valid_session_id,
    validate_session_id,
)


@pytest.mark.parametrize("good", ["a", "0", "default", "s-1", "a" * 63, "abc-def-1"])
def test_valid_ids_are_returned_unchanged(good: str) -> None:
    assert validate_session_id(good) == good


@pytest.mark.parametrize(
    "bad",
    ["", "-x", "x-", "UPPER", "a.b", "..", "a" * 64, "a_b", "a/b", "é", " a", "a\n", None, 5],
)
def test_invalid_ids_raise_an_error_naming_the_rule(bad: object) -> None:
    with pytest.raises(InvalidSessionIdError, match="one DNS label") as info:
        validate_session_id(bad)
    assert "Invalid session id" in str(info.value)


def test_a_trailing_newline_is_not_accepted_by_the_anchored_regex() -> None:
    assert not is_valid_session_id("abc\n")


def test_generated_ids_are_valid_and_distinct() -> None:
    ids = {generate_session_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(is_valid_session_id(i) for i in ids)


@given(st.text(max_size=80))
def test_anything_accepted_is_a_single_lowercase_dns_label(text: str) -> None:
    if is_valid_session_id(text):
        assert SESSION_ID_REGEX.fullmatch(text)
        assert "." not in text and "/" not in text and len(text) <= 63
        assert text == text.lower() and text.isascii()
