"""The replay ring and the client-address rules, without sockets or processes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.datastructures import Headers

from session_runtime import naming
from session_runtime.agent.clients import (
    MAX_FORWARDED,
    MAX_USER_LENGTH,
    client_address,
    client_info,
    forwarded_for,
    user_name,
)
from session_runtime.agent.replay import Gap, ReplayRing


def _filled(limit: int, sizes: list[int]) -> ReplayRing:
    ring = ReplayRing(limit)
    for size in sizes:
        seq = ring.next_seq
        assert ring.append(str(seq).encode().ljust(size, b".")) == seq
    return ring


def test_seqs_start_at_one_and_reads_follow_the_seq_given() -> None:
    ring = _filled(1000, [10, 10, 10])
    assert (ring.first_seq, ring.last_seq, ring.next_seq) == (1, 3, 4)
    gap, frames = ring.read(1, 10)
    assert gap is None
    assert [seq for seq, _ in frames] == [2, 3]
    assert frames[0][1].startswith(b"2")
    assert ring.read(3, 10) == (None, [])
    assert ring.read(0, 2)[1][-1][0] == 2  # bounded by the limit asked


def test_overflow_drops_the_oldest_and_names_the_exact_gap() -> None:
    ring = _filled(25, [10, 10, 10, 10])  # only the last two fit
    assert (ring.first_seq, ring.last_seq, ring.size, ring.dropped) == (3, 4, 20, 2)
    gap, frames = ring.read(0, 10)
    assert gap == Gap(1, 2)
    assert [seq for seq, _ in frames] == [3, 4]
    gap, frames = ring.read(1, 10)
    assert gap == Gap(2, 2)
    assert ring.read(2, 10)[0] is None


def test_the_newest_frame_is_kept_even_when_it_alone_exceeds_the_bound() -> None:
    ring = _filled(5, [3, 100])
    assert (ring.first_seq, ring.last_seq, ring.size) == (2, 2, 100)


@pytest.mark.parametrize("after", [-1, 4])
def test_reading_outside_the_seqs_produced_is_refused(after: int) -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        _filled(100, [1, 1, 1]).read(after, 10)


def test_an_empty_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one byte"):
        ReplayRing(0)


@given(
    limit=st.integers(1, 300),
    sizes=st.lists(st.integers(1, 120), min_size=1, max_size=3000),
    after=st.integers(0, 3000),
)
def test_every_reader_gets_each_retained_seq_once_after_the_exact_gap(
    limit: int, sizes: list[int], after: int
) -> None:
    ring = _filled(limit, sizes)
    after = min(after, ring.last_seq)
    assert ring.size <= limit or ring.first_seq == ring.last_seq
    assert ring.last_seq == len(sizes)
    gap, frames = ring.read(after, len(sizes) + 1)
    expected_start = max(after + 1, ring.first_seq)
    if after + 1 < ring.first_seq:
        assert gap == Gap(after + 1, ring.first_seq - 1)
    else:
        assert gap is None
    assert [seq for seq, _ in frames] == list(range(expected_start, ring.last_seq + 1))
    assert all(frame.startswith(str(seq).encode()) for seq, frame in frames)
    assert sum(len(frame) for _, frame in ring.read(ring.first_seq - 1, 10**6)[1]) == ring.size


# --- who is on a connection ----------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "expected", "chain"),
    [
        # Behind a load balancer: nginx's peer is the balancer; the chain says the rest.
        (
            [("X-Forwarded-For", "203.0.113.7, 10.0.0.2"), ("X-Real-IP", "10.0.0.2")],
            "10.0.0.2",
            ("203.0.113.7", "10.0.0.2"),
        ),
        # A client that forges the chain: nginx appends its real peer and sets X-Real-IP.
        (
            [("X-Forwarded-For", "192.0.2.66, 198.51.100.9"), ("X-Real-IP", "198.51.100.9")],
            "198.51.100.9",
            ("192.0.2.66", "198.51.100.9"),
        ),
        ([("X-Real-IP", "10.0.0.2")], "10.0.0.2", ()),
        ([("X-Real-IP", "[2001:db8::1]:443")], "2001:db8::1", ()),
        # Without our proxy, a forwarded chain alone is the caller's say-so: the peer counts.
        ([("X-Forwarded-For", "198.51.100.4:5555")], "127.0.0.1:4242", ("198.51.100.4",)),
        (
            [("X-Forwarded-For", 'not-an-ip {"evil": 1}'), ("X-Real-IP", "10.0.0.9")],
            "10.0.0.9",
            (),
        ),
        ([("X-Forwarded-For", "garbage")], "127.0.0.1:4242", ()),
        ([("X-Real-IP", "10.0.0.1"), ("X-Real-IP", "10.0.0.2")], "127.0.0.1:4242", ()),
        ([], "127.0.0.1:4242", ()),
    ],
)
def test_the_client_is_the_proxys_peer_and_the_forwarded_chain_is_kept_apart(
    headers: list[tuple[str, str]], expected: str, chain: tuple[str, ...]
) -> None:
    assert client_address(Headers(headers), "127.0.0.1:4242") == expected
    assert forwarded_for(Headers(headers)) == chain


def test_a_long_forwarded_chain_keeps_its_last_entries() -> None:
    addresses = [f"192.0.2.{i}" for i in range(1, 21)]
    headers = Headers([("X-Forwarded-For", ", ".join(addresses))])
    assert forwarded_for(headers) == tuple(addresses[-MAX_FORWARDED:])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["alice@example.com"], "alice@example.com"),
        (["  bob  "], "bob"),
        ([], None),
        ([""], None),
        (["a\tb"], None),
        (["a\x85b"], None),
        (["x" * (MAX_USER_LENGTH + 1)], None),
        (["one", "two"], None),
    ],
)
def test_the_user_header_is_taken_only_when_it_is_one_printable_bounded_value(
    values: list[str], expected: str | None
) -> None:
    headers = Headers([(naming.HEADER_USER, v) for v in values])
    assert user_name(headers) == expected


def test_each_connection_gets_its_own_id() -> None:
    first = client_info(Headers(), "127.0.0.1:1")
    second = client_info(Headers(), "127.0.0.1:1")
    assert first.connection_id != second.connection_id
    assert client_info(Headers(), "p", "fixed").connection_id == "fixed"
