"""A small Kubernetes API server for tests: real HTTP on a free loopback port.

Why not ``kmock``'s ``KubernetesEmulator`` (0.8)? It stores and serves objects,
but the backend depends on more than it emulates: label and field selectors on
list and watch, ``uid``/``resourceVersion``/``creationTimestamp`` stamped on
write, watches that resume from a ``resourceVersion`` and end after
``timeoutSeconds``, ``stringData`` folded into ``data``, garbage collection of
objects whose owner is gone, a ``Terminating``-scoped ResourceQuota that
rejects pods with 403 "exceeded quota", SelfSubjectAccessReview, and error
bodies that are ``Status`` objects with the API server's ``reason`` values
(``NotFound``, ``AlreadyExists``, ``Forbidden``...), and RBAC: bearer tokens
map to ServiceAccounts, Roles and RoleBindings in the store decide every
request (403 otherwise) and every SelfSubjectAccessReview, resource names
included. Subclassing would have
replaced nearly all of it, so this module is the emulator: a threaded
``http.server`` with one store, one event log and fault injection.

Faults (:meth:`KubeEmulator.inject`) answer matching requests with an error
status and a ``Status`` body, drop the connection without an answer, or stall
before answering (so a client times out).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["ADMIN_TOKEN", "Fault", "KubeEmulator", "RecordedRequest"]

Obj = dict[str, Any]
Key = tuple[str, str, str]  # (plural, namespace, name)

_KINDS = {
    "pods": "Pod",
    "secrets": "Secret",
    "podtemplates": "PodTemplate",
    "events": "Event",
    "services": "Service",
    "resourcequotas": "ResourceQuota",
    "deployments": "Deployment",
    "configmaps": "ConfigMap",
    "roles": "Role",
    "rolebindings": "RoleBinding",
}
#: The token of the all-powerful client (cluster admin): what seeding and old tests use.
ADMIN_TOKEN = "emulator-token"
_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_PATH = re.compile(
    r"^/(?:api/v1|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$"
)
_WRITES = ("POST", "PUT", "PATCH", "DELETE")


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str, **details: Any) -> Obj:
    """Return a ``Status`` object like the API server's error bodies."""
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }


class ApiFailure(Exception):
    """Raised inside a handler to answer with a Status error."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


@dataclass
class Fault:
    """One injected failure, applied to the next ``times`` matching requests.

    ``kind`` is ``status`` (answer ``status`` with a Status body), ``drop``
    (close the connection without an answer) or ``stall`` (sleep ``seconds``
    before answering normally, so a short client timeout fires).
    """

    kind: str = "status"
    status: int = 500
    reason: str = "InternalError"
    message: str = "Internal error occurred: injected failure"
    times: int = 1
    method: str | None = None
    path_contains: str | None = None
    seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    #: True: only watch requests; False: never watch requests; None: either.
    watch: bool | None = None

    def matches(self, method: str, path: str, watching: bool = False) -> bool:
        """Return True if this fault applies to the request."""
        if self.method and self.method != method:
            return False
        if self.watch is not None and self.watch != watching:
            return False
        return not (self.path_contains and self.path_contains not in path)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the emulator received (for asserting writes)."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Obj | None
    #: Who sent it ("system:serviceaccount:<ns>:<name>", "admin", or "anonymous").
    user: str = "admin"


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (lists are replaced, ``null`` deletes)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _dig(obj: Obj, dotted: str) -> Any:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _split_selector(text: str) -> list[str]:
    """Split on commas that are not inside ``in (...)`` parentheses."""
    parts, depth, buf = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(buf)
            buf = ""
        else:
            buf += ch
    if buf:
        parts.append(buf)
    return [p.strip() for p in parts if p.strip()]


def label_matches(labels: dict[str, str], selector: str) -> bool:
    """Evaluate a label selector (=, ==, !=, exists, !exists, in, notin)."""
    for term in _split_selector(selector):
        set_match = re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term)
        if set_match:
            key, op, values = set_match.groups()
            allowed = {v.strip() for v in values.split(",")}
            if (op == "in") != (labels.get(key) in allowed):
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_matches(obj: Obj, selector: str) -> bool:
    """Evaluate a field selector (dotted paths with = and !=)."""
    for term in _split_selector(selector):
        negate = "!=" in term
        key, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        actual = _dig(obj, key)
        actual_text = "" if actual is None else str(actual)
        if (actual_text == value) == negate:
            return False
    return True


class KubeEmulator:
    """An in-memory Kubernetes API over real HTTP (start/stop it; use ``url``).

    Objects are stored by (plural, namespace, name). Every write appends a
    watch event; watches replay from a ``resourceVersion`` or start with the
    current objects. ``on_create`` hooks see each created object (the kubelet
    helper uses one). ``denied`` holds (verb, resource) pairs that
    SelfSubjectAccessReview refuses.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._objects: dict[Key, Obj] = {}
        self._events: list[tuple[int, str, str, Obj]] = []  # (rv, plural, type, object)
        self._rv = 100
        self._faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self.on_create: list[Callable[[str, Obj], None]] = []
        #: Called (outside the lock) with each deleted object, garbage collection included.
        self.on_delete: list[Callable[[str, Obj], None]] = []
        self._graveyard: list[tuple[str, Obj]] = []
        #: When set, a deleted pod terminates for this many seconds before it is gone
        #: (as a kubelet honours terminationGracePeriodSeconds); None: gone at once.
        self.pod_grace_s: float | None = None
        self._timers: list[threading.Timer] = []
        self.denied: set[tuple[str, str]] = set()
        #: Bearer token -> user. Unknown tokens are refused (401); the admin bypasses RBAC.
        self.identities: dict[str, str] = {ADMIN_TOKEN: "admin"}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # --- lifecycle -------------------------------------------------------------
    def start(self) -> str:
        """Serve on a free loopback port; return the base URL."""
        emulator = self

        class Handler(_Handler):
            owner = emulator

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving; open watches end."""
        self._stopping.set()
        for timer in self._timers:
            timer.cancel()
        with self._lock:
            self._lock.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def serviceaccount_token(self, namespace: str, name: str) -> str:
        """Return a bearer token that authenticates as ServiceAccount ``namespace/name``."""
        token = f"sa-{uuid.uuid4().hex}"
        self.identities[token] = f"system:serviceaccount:{namespace}:{name}"
        return token

    def kubeconfig(self, namespace: str, token: str = ADMIN_TOKEN) -> dict[str, Any]:
        """Return a kubeconfig dict pointing at this server, authenticating with ``token``."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "tester", "namespace": namespace},
                }
            ],
            "current-context": "emulator",
        }

    # --- faults and records ----------------------------------------------------
    def inject(self, fault: Fault) -> None:
        """Apply ``fault`` to the next ``fault.times`` matching requests."""
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Forget every pending fault."""
        with self._lock:
            self._faults.clear()

    def take_fault(self, method: str, path: str, watching: bool = False) -> Fault | None:
        """Return (and count down) the first fault matching a request."""
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.matches(method, path, watching):
                    fault.times -= 1
                    return fault
            return None

    def writes(self) -> list[RecordedRequest]:
        """Return the recorded object writes (reviews excluded)."""
        return [
            r
            for r in self.requests
            if r.method in _WRITES and "selfsubjectaccessreviews" not in r.path
        ]

    # --- direct store access (kubelet helper, assertions) ------------------------
    def get(self, plural: str, namespace: str, name: str) -> Obj | None:
        """Return a copy of a stored object, or None."""
        with self._lock:
            obj = self._objects.get((plural, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, plural: str, namespace: str) -> list[Obj]:
        """Return copies of every stored object of a kind in a namespace."""
        with self._lock:
            return [
                copy.deepcopy(o)
                for (p, ns, _), o in self._objects.items()
                if p == plural and ns == namespace
            ]

    def put(self, plural: str, obj: Obj) -> Obj:
        """Create or replace an object directly (no hooks, no quota)."""
        meta = obj.setdefault("metadata", {})
        key = (plural, meta.get("namespace", "default"), meta["name"])
        with self._lock:
            existed = key in self._objects
            stored = self._stamp(plural, copy.deepcopy(obj), self._objects.get(key))
            self._objects[key] = stored
            self._record_event(plural, "MODIFIED" if existed else "ADDED", stored)
            return copy.deepcopy(stored)

    def patch(self, plural: str, namespace: str, name: str, patch: Obj) -> Obj:
        """Merge-patch a stored object directly (as a controller would)."""
        with self._lock:
            key = (plural, namespace, name)
            if key not in self._objects:
                raise KeyError(key)
            stored = self._stamp(
                plural, _merge_patch(self._objects[key], patch), self._objects[key]
            )
            self._objects[key] = stored
            self._record_event(plural, "MODIFIED", stored)
            return copy.deepcopy(stored)

    def set_status(self, plural: str, namespace: str, name: str, status: Obj) -> Obj:
        """Replace an object's whole ``status`` (as the kubelet does); KeyError if gone."""
        with self._lock:
            key = (plural, namespace, name)
            if key not in self._objects:
                raise KeyError(key)
            updated = copy.deepcopy(self._objects[key])
            updated["status"] = {k: v for k, v in status.items() if v is not None}
            stored = self._stamp(plural, updated, self._objects[key])
            self._objects[key] = stored
            self._record_event(plural, "MODIFIED", stored)
            return copy.deepcopy(stored)

    def remove(self, plural: str, namespace: str, name: str) -> bool:
        """Delete an object directly (with garbage collection)."""
        with self._lock:
            removed = self._delete((plural, namespace, name))
        self._flush_deleted()
        return removed

    # --- internals (call with the lock held) ------------------------------------
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _stamp(self, plural: str, obj: Obj, previous: Obj | None) -> Obj:
        meta = obj.setdefault("metadata", {})
        old_meta = (previous or {}).get("metadata", {})
        meta["uid"] = old_meta.get("uid") or meta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = old_meta.get("creationTimestamp") or _now_iso()
        meta["resourceVersion"] = self._next_rv()
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", _KINDS.get(plural, plural.capitalize()))
        if plural == "secrets" and "stringData" in obj:
            data = obj.setdefault("data", {})
            for key, value in obj.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        if plural == "pods":
            obj.setdefault("status", {"phase": "Pending"})
        return obj

    def _record_event(self, plural: str, kind: str, obj: Obj) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        self._events.append((rv, plural, kind, copy.deepcopy(obj)))
        self._lock.notify_all()

    def _delete(self, key: Key) -> bool:
        obj = self._objects.pop(key, None)
        if obj is None:
            return False
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._record_event(key[0], "DELETED", obj)
        self._graveyard.append((key[0], copy.deepcopy(obj)))
        self._collect_garbage()
        return True

    def _terminate(self, key: Key) -> None:
        """Graceful pod deletion: mark it now, remove it after ``pod_grace_s``."""
        obj = self._objects[key]
        if obj["metadata"].get("deletionTimestamp"):
            return
        obj["metadata"]["deletionTimestamp"] = _now_iso()
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._record_event(key[0], "MODIFIED", obj)
        timer = threading.Timer(self.pod_grace_s or 0.0, self.remove, args=key)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _flush_deleted(self) -> None:
        """Tell the ``on_delete`` hooks (call without the lock held)."""
        with self._lock:
            dead, self._graveyard = self._graveyard, []
        for plural, obj in dead:
            for hook in list(self.on_delete):
                hook(plural, obj)

    def _collect_garbage(self) -> None:
        uids = {o["metadata"]["uid"] for o in self._objects.values()}
        for key, obj in list(self._objects.items()):
            owners = obj["metadata"].get("ownerReferences") or []
            if owners and not any(o.get("uid") in uids for o in owners):
                self._delete(key)

    def _check_quota(self, namespace: str, pod: Obj) -> None:
        if not pod.get("spec", {}).get("activeDeadlineSeconds"):
            return
        for (plural, ns, name), quota in self._objects.items():
            if plural != "resourcequotas" or ns != namespace:
                continue
            if "Terminating" not in (quota.get("spec", {}).get("scopes") or []):
                continue
            hard = int(quota["spec"].get("hard", {}).get("pods", "1000000"))
            used = sum(
                1
                for (p, n, _), o in self._objects.items()
                if p == "pods"
                and n == namespace
                and o.get("spec", {}).get("activeDeadlineSeconds")
                and o.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            )
            if used >= hard:
                raise ApiFailure(
                    403,
                    "Forbidden",
                    f'pods "{pod["metadata"]["name"]}" is forbidden: exceeded quota: {name}, '
                    f"requested: pods=1, used: pods={used}, limited: pods={hard}",
                )

    # --- RBAC (Roles and RoleBindings in the store, as the API server's authorizer) --
    def allowed(
        self,
        user: str,
        verb: str,
        resource: str,
        namespace: str,
        *,
        name: str | None = None,
        group: str = "",
    ) -> bool:
        """Return True when a RoleBinding in ``namespace`` grants ``user`` the request.

        A rule with ``resourceNames`` grants only requests for those names; a
        request without a name (list, watch, create, an unnamed review) needs a
        rule without them — as the real RBAC authorizer decides.
        """
        if user == "admin":
            return True
        if not user.startswith("system:serviceaccount:"):
            return False
        _, _, sa_ns, sa_name = user.split(":", 3)
        with self._lock:
            bindings = [
                o
                for (p, ns, _), o in self._objects.items()
                if p == "rolebindings" and ns == namespace
            ]
            roles = {
                n: o for (p, ns, n), o in self._objects.items() if p == "roles" and ns == namespace
            }
        for binding in bindings:
            if not any(
                s.get("kind") == "ServiceAccount"
                and s.get("name") == sa_name
                and s.get("namespace", namespace) == sa_ns
                for s in binding.get("subjects") or []
            ):
                continue
            role = roles.get(binding.get("roleRef", {}).get("name", ""))
            for rule in (role or {}).get("rules") or []:
                if _rule_grants(rule, verb, resource, name, group):
                    return True
        return False

    def _authorize(self, user: str, method: str, path: str, watching: bool) -> None:
        """Raise 403 Forbidden when ``user`` may not make this request."""
        if path == "/version" or path.endswith("/selfsubjectaccessreviews"):
            return
        match = _PATH.match(path)
        if not match:
            return
        plural, name, sub = match["plural"], match["name"], match["sub"]
        verb = _VERBS.get(method, "get")
        if method == "GET":
            verb = "watch" if watching else ("get" if name else "list")
        resource = f"{plural}/{sub}" if sub else plural
        namespace = match["ns"] or ""
        if not self.allowed(user, verb, resource, namespace, name=name, group=match["group"] or ""):
            what = f'{plural} "{name}"' if name else plural
            raise ApiFailure(
                403,
                "Forbidden",
                f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
                f'in API group "{match["group"] or ""}" in the namespace "{namespace}"',
            )

    # --- request handling (called by the handler threads) ------------------------
    def handle(
        self, method: str, path: str, query: dict[str, str], body: Obj | None, user: str = "admin"
    ) -> Obj:
        """Serve one non-watch request; raise ApiFailure for API errors."""
        special = self._special(method, path, body or {}, user)
        if special is not None:
            return special
        match = _PATH.match(path)
        if not match:
            raise ApiFailure(404, "NotFound", f"the server could not find the resource {path}")
        plural, ns, name, sub = match["plural"], match["ns"] or "", match["name"], match["sub"]
        if method == "POST" and name is None:
            created = self._create(plural, ns, body or {})
            for hook in list(self.on_create):
                hook(plural, created)
            return created
        with self._lock:
            key = (plural, ns, name or "")
            if method == "GET" and name is None:
                return self._list(plural, ns, query)
            if name is not None and key not in self._objects:
                raise ApiFailure(404, "NotFound", f'{plural} "{name}" not found')
            if method == "GET":
                return copy.deepcopy(self._objects[key])
            if method == "PATCH":
                return self._patch(key, body or {}, subresource=sub)
            if method == "DELETE":
                if plural == "pods" and self.pod_grace_s is not None:
                    self._terminate(key)
                else:
                    self._delete(key)
        if method == "DELETE" and name is not None:
            self._flush_deleted()
            return {"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 200}
        raise ApiFailure(405, "MethodNotAllowed", f"{method} is not supported on {path}")

    def _special(self, method: str, path: str, body: Obj, user: str) -> Obj | None:
        """Serve ``/version`` and SelfSubjectAccessReview (answered from the RBAC rules)."""
        if path == "/version":
            return {"major": "1", "minor": "30", "gitVersion": "v1.30.0-emulator"}
        if path.endswith("/selfsubjectaccessreviews") and method == "POST":
            return self._review(body, user)
        return None

    def _review(self, body: Obj, user: str) -> Obj:
        """Answer "may I?" for the caller, with or without a resource name.

        ``denied`` (verb, resource) pairs are refused even for the admin (older tests).
        """
        attrs = body.get("spec", {}).get("resourceAttributes", {})
        verb, resource = attrs.get("verb", ""), attrs.get("resource", "")
        if attrs.get("subresource"):
            resource = f"{resource}/{attrs['subresource']}"
        allowed = (verb, attrs.get("resource")) not in self.denied and self.allowed(
            user,
            verb,
            resource,
            attrs.get("namespace", ""),
            name=attrs.get("name") or None,
            group=attrs.get("group", ""),
        )
        return {**body, "status": {"allowed": allowed}}

    def _list(self, plural: str, ns: str, query: dict[str, str]) -> Obj:
        items = [
            copy.deepcopy(o)
            for (p, n, _), o in sorted(self._objects.items())
            if p == plural and (not ns or n == ns) and self._selected(o, query)
        ]
        kind = _KINDS.get(plural, plural.capitalize())
        return {
            "apiVersion": "v1",
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _patch(self, key: Key, body: Obj, *, subresource: str | None) -> Obj:
        patched = _merge_patch(self._objects[key], body)
        if subresource is None:
            patched["metadata"]["name"] = key[2]
        stored = self._stamp(key[0], patched, self._objects[key])
        self._objects[key] = stored
        self._record_event(key[0], "MODIFIED", stored)
        return copy.deepcopy(stored)

    def _create(self, plural: str, ns: str, body: Obj) -> Obj:
        with self._lock:
            meta = body.setdefault("metadata", {})
            meta["namespace"] = ns
            key = (plural, ns, meta.get("name", ""))
            if key in self._objects:
                raise ApiFailure(409, "AlreadyExists", f'{plural} "{key[2]}" already exists')
            if plural == "pods":
                self._check_quota(ns, body)
            stored = self._stamp(plural, copy.deepcopy(body), None)
            self._objects[key] = stored
            self._record_event(plural, "ADDED", stored)
            return copy.deepcopy(stored)

    def _selected(self, obj: Obj, query: dict[str, str]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        if "labelSelector" in query and not label_matches(labels, query["labelSelector"]):
            return False
        return not ("fieldSelector" in query and not field_matches(obj, query["fieldSelector"]))

    def watch(self, path: str, query: dict[str, str]) -> Iterator[Obj]:
        """Yield watch events for a list path until ``timeoutSeconds`` or stop."""
        match = _PATH.match(path)
        if not match:
            raise ApiFailure(404, "NotFound", f"the server could not find {path}")
        return self._watch(match["plural"], match["ns"] or "", query)

    def _watch(self, plural: str, ns: str, query: dict[str, str]) -> Iterator[Obj]:
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 30)
        since = query.get("resourceVersion")
        with self._lock:
            if since and since != "0":
                cursor = next(
                    (i for i, e in enumerate(self._events) if e[0] > int(since)), len(self._events)
                )
                pending = []
            else:
                cursor = len(self._events)
                pending = [
                    {"type": "ADDED", "object": copy.deepcopy(o)}
                    for (p, n, _), o in sorted(self._objects.items())
                    if p == plural and (not ns or n == ns) and self._selected(o, query)
                ]
        yield from pending
        while not self._stopping.is_set():
            with self._lock:
                if cursor >= len(self._events):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._lock.wait(min(remaining, 0.5))
                batch = self._events[cursor:]
                cursor = len(self._events)
            for _, p, kind, obj in batch:
                if p != plural or (ns and obj["metadata"].get("namespace") != ns):
                    continue
                if self._selected(obj, query):
                    yield {"type": kind, "object": obj}
            if time.monotonic() >= deadline:
                return


def _rule_grants(rule: Obj, verb: str, resource: str, name: str | None, group: str) -> bool:
    """Whether one PolicyRule grants the request (``*`` wildcards included)."""

    def has(values: Any, value: str) -> bool:
        return "*" in (values or []) or value in (values or [])

    if not (has(rule.get("apiGroups"), group) and has(rule.get("resources"), resource)):
        return False
    if not has(rule.get("verbs"), verb):
        return False
    names = rule.get("resourceNames") or []
    return not names or (name is not None and name in names)


class _Handler(BaseHTTPRequestHandler):
    owner: KubeEmulator
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: pytest shows failures, not access logs."""

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        emu = self.owner
        auth = self.headers.get("Authorization") or ""
        user = emu.identities.get(auth.removeprefix("Bearer ").strip(), "anonymous")
        emu.requests.append(
            RecordedRequest(
                self.command, parts.path, query, self.headers.get("Content-Type"), body, user
            )
        )
        watching = self.command == "GET" and query.get("watch") in ("true", "1")
        if user == "anonymous":
            self._send_json(401, status_body(401, "Unauthorized", "Unauthorized"))
            return
        fault = emu.take_fault(self.command, parts.path, watching)
        if fault is not None:
            if fault.kind == "drop":
                self.close_connection = True
                self.connection.close()
                return
            if fault.kind == "stall":
                time.sleep(fault.seconds)
            else:
                self._send_json(
                    fault.status,
                    status_body(fault.status, fault.reason, fault.message),
                    fault.headers,
                )
                return
        try:
            emu._authorize(user, self.command, parts.path, watching)
            if watching:
                self._stream(emu.watch(parts.path, query))
            else:
                self._send_json(200, emu.handle(self.command, parts.path, query, body, user))
        except ApiFailure as exc:
            self._send_json(exc.code, status_body(exc.code, exc.reason, exc.message))

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _dispatch

    def _send_json(self, code: int, payload: Obj, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: Iterator[Obj]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                self._chunk(json.dumps(event).encode() + b"\n")
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()
