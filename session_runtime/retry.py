"""One retry helper for the runtime: exponential backoff with jitter, on tenacity.

Every retried operation (Kubernetes API calls and watches, the proxy handshake)
goes through :class:`Backoff`, so how long the runtime waits, and what it logs
while it waits, is decided here once. Jitter spreads the retries of many server
replicas that failed together (an API server restart) instead of letting them
return in lockstep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import tenacity

__all__ = ["Backoff", "RetryAfter", "log"]

log = logging.getLogger(__name__)

#: Reads a server's "retry after N seconds" from a failure (None: it said nothing).
RetryAfter = Callable[[BaseException], float | None]


class _Wait(tenacity.wait.wait_base):
    """Backoff with jitter, at least as long as the server asked, never beyond the cap."""

    def __init__(self, backoff: Backoff, retry_after: RetryAfter | None) -> None:
        self.backoff = backoff
        self.retry_after = retry_after

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        hint = self.retry_after(exc) if exc is not None and self.retry_after else None
        return self.backoff.delay(retry_state.attempt_number, hint)


def _is(predicate: Callable[[BaseException], bool]) -> tenacity.retry_base:
    return tenacity.retry_if_exception(predicate)


@dataclass(frozen=True)
class Backoff:
    """How a transient failure is retried.

    Delays grow ``base_delay * 2**(n-1)`` plus up to ``base_delay`` of random
    jitter, capped at ``max_delay``. A server's ``Retry-After`` is honoured but
    never beyond ``max_delay``.

    Args:
        attempts: tries in all (the first one included).
        base_delay: seconds before the first retry (before jitter).
        max_delay: the longest pause between two tries.
    """

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Return the pause after try number ``attempt`` (1-based), jitter included."""
        jittered = tenacity.wait_exponential_jitter(
            multiplier=self.base_delay, max=self.max_delay, jitter=self.base_delay
        )
        # The wait reads nothing of the call state but the attempt number.
        state = cast("tenacity.RetryCallState", SimpleNamespace(attempt_number=attempt))
        backoff = float(jittered(state))
        if retry_after is not None:
            return float(min(self.max_delay, max(backoff, retry_after)))
        return backoff

    def retrying(
        self,
        what: str,
        retry_on: Callable[[BaseException], bool],
        *,
        within: float | None = None,
        retry_after: RetryAfter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
    ) -> tenacity.Retrying:
        """Return a tenacity ``Retrying`` for ``for attempt in ...: with attempt:`` loops.

        The last failure is re-raised as itself (never ``RetryError``), so callers
        map it to their typed error; ``statistics["attempt_number"]`` says how many
        tries were made.

        Args:
            what: the operation, for the log line written before each pause.
            retry_on: True for failures worth another try.
            within: also stop when the next pause would end after this many seconds.
            retry_after: reads a server's requested pause from a failure.
            sleep: how to pause (tests pass a no-op).
            before_sleep: called before each pause, after the log line.
        """
        return tenacity.Retrying(
            **self._options(what, retry_on, within, retry_after, before_sleep),
            sleep=sleep,
        )

    def async_retrying(
        self,
        what: str,
        retry_on: Callable[[BaseException], bool],
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> tenacity.AsyncRetrying:
        """Return the asyncio twin of :meth:`retrying` (``async for attempt in ...``)."""
        options = self._options(what, retry_on, None, None, None)
        if sleep is not None:
            return tenacity.AsyncRetrying(**options, sleep=sleep)
        return tenacity.AsyncRetrying(**options)

    def _options(
        self,
        what: str,
        retry_on: Callable[[BaseException], bool],
        within: float | None,
        retry_after: RetryAfter | None,
        before_sleep: Callable[[tenacity.RetryCallState], None] | None,
    ) -> dict[str, Any]:
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(self.attempts)
        if within is not None:
            stop = stop | tenacity.stop_before_delay(within)

        def announce(state: tenacity.RetryCallState) -> None:
            outcome = state.outcome
            exc = outcome.exception() if outcome is not None else None
            pause = state.next_action.sleep if state.next_action else 0.0
            log.info(
                "%s failed (try %d): %s; retrying in %.2fs",
                what,
                state.attempt_number,
                type(exc).__name__ if exc is not None else "?",
                pause,
            )
            if before_sleep is not None:
                before_sleep(state)

        return {
            "stop": stop,
            "wait": _Wait(self, retry_after),
            "retry": _is(retry_on),
            "reraise": True,
            "before_sleep": announce,
        }
