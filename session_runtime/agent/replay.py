"""One command's replay buffer: its numbered frames, bounded in bytes, oldest dropped first.

Every ``output`` and the ``exit`` of a command get the next ``seq`` (1, 2, 3
...) and go in here, encoded once. Readers ask for what follows the last seq
they saw; when the bound made the buffer drop some of that, they are told the
exact inclusive range first (a :class:`Gap`). The newest frame is always kept,
even when it alone exceeds the bound, so a finished command's ``exit`` is
never lost. Pure and synchronous: no I/O, no event loop.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Gap", "ReplayRing"]

#: Compact the backing list once this many dropped slots lead it (amortised O(1)).
_COMPACT_AFTER = 1024


@dataclass(frozen=True)
class Gap:
    """Seqs ``from_seq`` to ``to_seq`` (inclusive) were dropped before a reader got them."""

    from_seq: int
    to_seq: int


class ReplayRing:
    """Seq-numbered frames of one command, at most ``limit`` bytes of them.

    Args:
        limit: the byte budget (the newest frame is kept even beyond it).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the replay limit must be at least one byte")
        self.limit = limit
        self._frames: list[bytes] = []
        self._head = 0  # index in _frames of the oldest retained frame
        self._first_seq = 1  # seq of _frames[_head]
        self._size = 0

    @property
    def first_seq(self) -> int:
        """The oldest retained seq (``last_seq + 1`` when nothing is retained)."""
        return self._first_seq

    @property
    def last_seq(self) -> int:
        """The newest seq appended so far; 0 before the first."""
        return self._first_seq + len(self._frames) - self._head - 1

    @property
    def next_seq(self) -> int:
        """The seq the next :meth:`append` gets (build the frame with it)."""
        return self.last_seq + 1

    @property
    def size(self) -> int:
        """Bytes retained."""
        return self._size

    @property
    def dropped(self) -> int:
        """How many frames the bound has dropped."""
        return self._first_seq - 1

    def append(self, frame: bytes) -> int:
        """Keep ``frame`` as seq :attr:`next_seq`, dropping the oldest beyond the bound.

        Args:
            frame: the encoded message, which already carries that seq.

        Returns:
            The seq it got.
        """
        self._frames.append(frame)
        self._size += len(frame)
        while self._size > self.limit and len(self._frames) - self._head > 1:
            self._size -= len(self._frames[self._head])
            self._frames[self._head] = b""
            self._head += 1
            self._first_seq += 1
        if self._head >= _COMPACT_AFTER and self._head * 2 >= len(self._frames):
            del self._frames[: self._head]
            self._head = 0
        return self.last_seq

    def read(self, after_seq: int, limit: int) -> tuple[Gap | None, list[tuple[int, bytes]]]:
        """Return what follows ``after_seq``: the dropped range (if any), then retained frames.

        Args:
            after_seq: the last seq the reader has (0 for none).
            limit: at most this many frames.

        Raises:
            ValueError: ``after_seq`` is negative or beyond :attr:`last_seq`.
        """
        if not 0 <= after_seq <= self.last_seq:
            raise ValueError(f"after_seq {after_seq} is outside 0..{self.last_seq}")
        gap = None
        start = after_seq + 1
        if start < self._first_seq:
            gap = Gap(start, self._first_seq - 1)
            start = self._first_seq
        index = self._head + start - self._first_seq
        frames = self._frames[index : index + limit]
        return gap, [(start + offset, frame) for offset, frame in enumerate(frames)]
