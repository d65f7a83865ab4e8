"""The Kubernetes API as the backend uses it: one client, bounded retries, typed errors.

Transient failures (connection refused or reset, timeouts, 429, 5xx) are retried
with jittered exponential backoff (:mod:`session_runtime.retry`) up to
:attr:`RetryPolicy.attempts`; when they run out
the caller gets :class:`~session_runtime.errors.BackendUnavailableError`. Every
other API error becomes :class:`~session_runtime.errors.BackendError` carrying
the API server's own message, except 404, which callers see as ``None`` or
``False`` where absence is an answer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2
import tenacity
from lightkube import ApiError, Client
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError
from lightkube.types import PatchType

from session_runtime.errors import BackendError, BackendUnavailableError
from session_runtime.retry import Backoff
from session_runtime.settings import WebSocketSettings

__all__ = [
    "KubeApi",
    "RetryPolicy",
    "api_reason",
    "is_transient",
    "load_kube_config",
    "to_backend_error",
]

T = TypeVar("T")
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy(Backoff):
    """:class:`~session_runtime.retry.Backoff` for API calls, plus each request's timeout."""

    request_timeout: float = 10.0


def load_kube_config(settings: WebSocketSettings) -> SingleConfig:
    """Return the cluster configuration: in-cluster, kubeconfig, or an explicit context.

    Args:
        settings: ``kube_context`` picks a kubeconfig context; otherwise the
            in-cluster service account is tried first, then ``$KUBECONFIG`` or
            ``~/.kube/config`` and its current context.

    Raises:
        BackendUnavailableError: no usable configuration was found.
    """
    try:
        if settings.kube_context:
            path = os.environ.get("KUBECONFIG", os.path.expanduser("~/.kube/config"))
            config = KubeConfig.from_file(path).get(settings.kube_context)
        else:
            config = KubeConfig.from_env().get()
    except (ConfigError, OSError, KeyError, ValueError) as exc:
        raise BackendUnavailableError(
            "No Kubernetes configuration found",
            cause=str(exc),
            hint="run in a pod with a service account, or set KUBECONFIG / WEBSOCKET_KUBE_CONTEXT",
        ) from None
    if config is None:
        raise BackendUnavailableError(
            "No Kubernetes configuration found",
            cause=f"context {settings.kube_context!r} is not in the kubeconfig",
            hint="list contexts with `kubectl config get-contexts`",
        )
    return config


def api_reason(exc: BaseException) -> tuple[int | None, str, str]:
    """Return (HTTP status, Status reason, message) of an API error."""
    if isinstance(exc, ApiError):
        status = exc.status
        return (status.code, status.reason or "", status.message or str(exc))
    if isinstance(exc, httpx2.HTTPStatusError):
        return (exc.response.status_code, "", exc.response.reason_phrase)
    return (None, "", f"{type(exc).__name__}: {exc}")


def is_transient(exc: BaseException) -> bool:
    """Return True for failures worth retrying (network trouble, 429, 5xx)."""
    if isinstance(exc, httpx2.TransportError):
        return True
    code, _, _ = api_reason(exc)
    return isinstance(exc, httpx2.HTTPStatusError) and code in _TRANSIENT_STATUS


def _retry_after(exc: BaseException) -> float | None:
    if not isinstance(exc, httpx2.HTTPStatusError):
        return None
    value = exc.response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def to_backend_error(what: str, exc: BaseException, *, attempts: int = 1) -> BackendError:
    """Return the typed error for a failed API call (the API's message as cause).

    Args:
        what: the operation, e.g. ``create pod gamgui-session-x``.
        exc: the failure from lightkube/httpx.
        attempts: how many times it was tried (mentioned when > 1).
    """
    code, reason, message = api_reason(exc)
    cause = f"{code} {reason}: {message}" if code else message
    if is_transient(exc):
        return BackendUnavailableError(
            f"Kubernetes API unavailable ({what})",
            cause=f"{cause} (after {attempts} attempts)",
            hint="check the API server and the network; transient errors were retried",
        )
    hint = None
    if code == 403:
        hint = "check the runtime's Role (`gamgui-session doctor` checks RBAC)"
    elif code == 401:
        hint = "the credentials were rejected; refresh the kubeconfig or service account"
    return BackendError(f"Kubernetes API refused to {what}", cause=cause, hint=hint)


class KubeApi:
    """A lightkube client bound to one namespace, with retries and typed errors.

    Args:
        config: the cluster configuration.
        namespace: every call is made in this namespace.
        retry: the retry policy for transient failures.
        trust_env: let httpx read proxy variables from the environment.
        sleep: how to pause between retries (tests pass a no-op).
    """

    def __init__(
        self,
        config: SingleConfig | KubeConfig,
        namespace: str,
        *,
        retry: RetryPolicy | None = None,
        trust_env: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.namespace = namespace
        self.retry = retry or RetryPolicy()
        self.trust_env = trust_env
        self._sleep = sleep
        self.client = Client(
            config,
            namespace=namespace,
            timeout=httpx2.Timeout(self.retry.request_timeout),
            trust_env=trust_env,
            field_manager="gamgui-session",
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    def call(self, what: str, fn: Callable[[], T], *, ok_statuses: Iterable[int] = ()) -> T | None:
        """Run ``fn`` with retries; return None when it fails with a status in ``ok_statuses``.

        Args:
            what: the operation, for error messages.
            fn: the API call.
            ok_statuses: HTTP statuses that mean "no result" rather than failure (e.g. 404).

        Raises:
            BackendUnavailableError: transient failures outlasted the retries.
            BackendError: the API refused, with its message.
        """
        accepted = set(ok_statuses)
        retrying = self._retrying(what)
        try:
            for attempt in retrying:
                with attempt:
                    try:
                        return fn()
                    except (httpx2.HTTPError, ApiError) as exc:
                        if api_reason(exc)[0] in accepted:
                            return None
                        raise
        except ValueError as exc:  # msgspec: the API sent an object the models reject
            raise BackendError(
                f"Kubernetes API answer to {what} could not be read",
                cause=str(exc)[:300],
                hint="the API server and the client disagree on the object's schema",
            ) from exc
        except (httpx2.HTTPError, ApiError) as exc:
            raise to_backend_error(what, exc, attempts=_tries(retrying)) from exc
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    def _retrying(self, what: str) -> tenacity.Retrying:
        return self.retry.retrying(what, is_transient, retry_after=_retry_after, sleep=self._sleep)

    # --- the verbs the backend uses -------------------------------------------
    def get(self, res: type[Any], name: str) -> Any | None:
        """Return the object, or None when it does not exist."""
        return self.call(
            f"get {res.__name__} {name}",
            lambda: self.client.get(res, name, namespace=self.namespace),
            ok_statuses=(404,),
        )

    def list(self, res: type[Any], labels: dict[str, str] | None = None) -> list[Any]:
        """Return every object of a kind matching ``labels``."""
        selector: dict[str, Any] | None = dict(labels) if labels else None
        result = self.call(
            f"list {res.__name__}",
            lambda: list(self.client.list(res, namespace=self.namespace, labels=selector)),
        )
        return result or []

    def create(self, obj: Any) -> Any:
        """Create an object; 409 and 403 stay ApiError so callers can decide (never retried)."""
        what = f"create {type(obj).__name__} {obj.metadata.name}"
        retrying = self._retrying(what)
        try:
            for attempt in retrying:
                with attempt:
                    return self.client.create(obj, namespace=self.namespace)
        except ApiError as exc:
            if api_reason(exc)[0] in (403, 409):
                raise
            raise to_backend_error(what, exc, attempts=_tries(retrying)) from exc
        except httpx2.HTTPError as exc:
            raise to_backend_error(what, exc, attempts=_tries(retrying)) from exc
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    def patch(self, res: type[Any], name: str, patch: dict[str, Any]) -> Any | None:
        """Merge-patch an object; None when it does not exist."""
        return self.call(
            f"patch {res.__name__} {name}",
            lambda: self.client.patch(
                res, name, patch, namespace=self.namespace, patch_type=PatchType.MERGE
            ),
            ok_statuses=(404,),
        )

    def delete(self, res: type[Any], name: str) -> bool:
        """Delete an object; True if it existed (404 is success, not an error)."""
        deleted = self.call(
            f"delete {res.__name__} {name}",
            lambda: self.client.delete(res, name, namespace=self.namespace) or True,
            ok_statuses=(404,),
        )
        return bool(deleted)


def _tries(retrying: tenacity.Retrying) -> int:
    return int(retrying.statistics.get("attempt_number", 1))
