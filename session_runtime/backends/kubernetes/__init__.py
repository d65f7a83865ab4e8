"""The Kubernetes backend: sessions as pods (see :mod:`.backend`).

Modules, one job each: :mod:`.api` (client, retries, typed errors), :mod:`.pods`
(what a pod's status means), :mod:`.watch` (wait for Ready with progress),
:mod:`.reap` (what the reaper removes), :mod:`.backend` (the backend itself).
"""

from __future__ import annotations

from session_runtime.backends.kubernetes.api import RetryPolicy, load_kube_config
from session_runtime.backends.kubernetes.backend import KubernetesBackend

__all__ = ["KubernetesBackend", "RetryPolicy", "load_kube_config"]
