"""Pure builders of the proxy's manifests (plain dicts; no Pulumi here).

The components turn these into resources; tests call them directly. The
``nginx.conf`` comes from :func:`session_runtime.nginx.render_nginx_conf`, the
same renderer the local stack runs, so the cluster and the local stack route
identically.
"""

from __future__ import annotations

import hashlib
from typing import Any

from components.config import StackConfig
from session_runtime import naming
from session_runtime.nginx import render_nginx_conf
from session_runtime.spec import (
    ResourceSpec,
    restricted_container_security,
    restricted_pod_security,
)

__all__ = [
    "CHECKSUM_ANNOTATION",
    "EXPORTER_RESOURCES",
    "NAMESPACE_NAME_LABEL",
    "NGINX_CONF_DIR",
    "NGINX_CONF_KEY",
    "NGINX_UID",
    "PROXY_CONFIGMAP_NAME",
    "PROXY_SERVICE_PORT",
    "common_labels",
    "config_checksum",
    "dns_egress_rule",
    "proxy_configmap",
    "proxy_deployment",
    "proxy_exporter_container",
    "proxy_ingress",
    "proxy_metrics_annotations",
    "proxy_network_policy",
    "proxy_pdb",
    "proxy_selector",
    "proxy_service",
]

PROXY_CONFIGMAP_NAME = "websocket-proxy-nginx"
NGINX_CONF_KEY = "nginx.conf"
#: The ConfigMap is mounted as a directory (no subPath, so it can be read atomically).
NGINX_CONF_DIR = "/etc/nginx/gamgui"
#: The uid nginxinc/nginx-unprivileged runs as.
NGINX_UID = 101
#: The Service listens on 80 so ``ws://websocket-proxy.<ns>.svc.cluster.local/...`` works.
PROXY_SERVICE_PORT = 80
CHECKSUM_ANNOTATION = "gamgui.io/config-checksum"
#: The label every namespace carries with its own name (Kubernetes >= 1.21).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
#: The exporter reads one small page per scrape.
EXPORTER_RESOURCES = ResourceSpec(
    cpu_request="10m", memory_request="16Mi", cpu_limit="100m", memory_limit="64Mi"
)
MANAGED_BY = "pulumi"


def common_labels(component: str) -> dict[str, str]:
    """Return the labels every object of ``component`` carries.

    Args:
        component: the ``app.kubernetes.io/component`` value.
    """
    return {
        naming.LABEL_NAME: naming.APP_NAME,
        naming.LABEL_COMPONENT: component,
        naming.LABEL_PART_OF: naming.PART_OF,
        naming.LABEL_MANAGED_BY: MANAGED_BY,
    }


def proxy_selector() -> dict[str, str]:
    """Return the labels that select the proxy pods (and nothing else)."""
    return {naming.LABEL_NAME: naming.APP_NAME, naming.LABEL_COMPONENT: naming.COMPONENT_PROXY}


def dns_egress_rule() -> dict[str, Any]:
    """Return a NetworkPolicy egress rule allowing DNS (UDP and TCP 53) anywhere."""
    return {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def _meta(name: str, cfg: StackConfig, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": cfg.namespace, "labels": common_labels(component)}


def config_checksum(text: str) -> str:
    """Return the sha256 of a config text (pods roll when it changes).

    Args:
        text: the rendered configuration.
    """
    return hashlib.sha256(text.encode()).hexdigest()


def proxy_configmap(cfg: StackConfig) -> dict[str, Any]:
    """Return the ConfigMap holding the rendered ``nginx.conf``.

    Args:
        cfg: the validated stack config.
    """
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(PROXY_CONFIGMAP_NAME, cfg, naming.COMPONENT_PROXY),
        "data": {NGINX_CONF_KEY: render_nginx_conf(cfg.nginx_config())},
    }


def proxy_exporter_container(cfg: StackConfig) -> dict[str, Any]:
    """Return the nginx-prometheus-exporter sidecar, reading stub_status over loopback.

    Args:
        cfg: the validated stack config (``proxy.metrics_enabled`` true).
    """
    scrape_uri = f"http://127.0.0.1:{naming.PROXY_STATUS_PORT}{naming.PROXY_STATUS_PATH}"
    probe = {"httpGet": {"path": "/metrics", "port": naming.PROXY_METRICS_PORT_NAME}}
    return {
        "name": "nginx-exporter",
        "image": cfg.proxy.metrics_exporter_image,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            f"--nginx.scrape-uri={scrape_uri}",
            f"--web.listen-address=:{naming.PROXY_METRICS_PORT}",
        ],
        "ports": [
            {
                "name": naming.PROXY_METRICS_PORT_NAME,
                "containerPort": naming.PROXY_METRICS_PORT,
                "protocol": "TCP",
            }
        ],
        "readinessProbe": {**probe, "periodSeconds": 10},
        "resources": EXPORTER_RESOURCES.to_manifest(),
        "securityContext": restricted_container_security(),
    }


def proxy_metrics_annotations(cfg: StackConfig) -> dict[str, str]:
    """Return the ``prometheus.io/*`` pod annotations (none when metrics are off).

    Args:
        cfg: the validated stack config.
    """
    if not cfg.proxy.metrics_enabled:
        return {}
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(naming.PROXY_METRICS_PORT),
        "prometheus.io/path": "/metrics",
        "prometheus.io/scheme": "http",
    }


def proxy_deployment(cfg: StackConfig, checksum: str) -> dict[str, Any]:
    """Return the nginx Deployment.

    Args:
        cfg: the validated stack config.
        checksum: :func:`config_checksum` of the nginx.conf (a change rolls the pods).
    """
    p = cfg.proxy
    nginx = cfg.nginx_config()
    probe = {"httpGet": {"path": naming.HEALTH_PATH, "port": naming.PROXY_PORT_NAME}}
    pod_labels = {**common_labels(naming.COMPONENT_PROXY), **proxy_selector()}
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": restricted_pod_security(NGINX_UID),
        "containers": [
            {
                "name": "nginx",
                "image": p.image,
                "imagePullPolicy": "IfNotPresent",
                # Our own config, the error log on stderr from the first line, foreground.
                "command": [
                    "nginx",
                    "-c",
                    f"{NGINX_CONF_DIR}/{NGINX_CONF_KEY}",
                    "-e",
                    "/dev/stderr",
                    "-g",
                    "daemon off;",
                ],
                "ports": [
                    {
                        "name": naming.PROXY_PORT_NAME,
                        "containerPort": nginx.listen_port,
                        "protocol": "TCP",
                    },
                    *(
                        [
                            {
                                "name": naming.PROXY_STATUS_PORT_NAME,
                                "containerPort": nginx.status_port,
                                "protocol": "TCP",
                            }
                        ]
                        if nginx.status_port is not None
                        else []
                    ),
                ],
                "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 2},
                "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
                "resources": p.resources.to_manifest(),
                "securityContext": restricted_container_security(),
                "volumeMounts": [
                    {"name": "config", "mountPath": NGINX_CONF_DIR, "readOnly": True},
                    # pid file and temp paths live here: the root filesystem is read-only.
                    {"name": "nginx-tmp", "mountPath": nginx.temp_dir},
                ],
            }
        ],
        "volumes": [
            {"name": "config", "configMap": {"name": PROXY_CONFIGMAP_NAME}},
            {"name": "nginx-tmp", "emptyDir": {"sizeLimit": "512Mi"}},
        ],
    }
    if p.metrics_enabled:
        pod_spec["containers"].append(proxy_exporter_container(cfg))
    if p.replicas > 1:
        pod_spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": proxy_selector()},
            }
            for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(naming.PROXY_SERVICE_NAME, cfg, naming.COMPONENT_PROXY),
        "spec": {
            "replicas": p.replicas,
            "selector": {"matchLabels": proxy_selector()},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {
                        CHECKSUM_ANNOTATION: checksum,
                        **proxy_metrics_annotations(cfg),
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def proxy_service(cfg: StackConfig) -> dict[str, Any]:
    """Return the ``websocket-proxy`` Service (LoadBalancer when so exposed).

    Args:
        cfg: the validated stack config.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(naming.PROXY_SERVICE_NAME, cfg, naming.COMPONENT_PROXY),
        "spec": {
            "type": "LoadBalancer" if cfg.proxy.exposure == "loadbalancer" else "ClusterIP",
            "selector": proxy_selector(),
            "ports": [
                {
                    "name": naming.PROXY_PORT_NAME,
                    "port": PROXY_SERVICE_PORT,
                    "targetPort": naming.PROXY_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def proxy_pdb(cfg: StackConfig) -> dict[str, Any] | None:
    """Return a PodDisruptionBudget keeping one proxy up, or None for a single replica.

    Args:
        cfg: the validated stack config.
    """
    if cfg.proxy.replicas <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(naming.PROXY_SERVICE_NAME, cfg, naming.COMPONENT_PROXY),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": proxy_selector()}},
    }


def proxy_ingress(cfg: StackConfig) -> dict[str, Any] | None:
    """Return the Ingress for the session paths, or None unless exposure is ``ingress``.

    Args:
        cfg: the validated stack config.
    """
    p = cfg.proxy
    if p.exposure != "ingress" or not p.ingress_host:
        return None
    timeout = str(max(p.read_timeout_s, p.send_timeout_s))
    spec: dict[str, Any] = {
        "rules": [
            {
                "host": p.ingress_host,
                "http": {
                    "paths": [
                        {
                            "path": naming.SESSION_PATH_PREFIX,
                            "pathType": "Prefix",
                            "backend": {
                                "service": {
                                    "name": naming.PROXY_SERVICE_NAME,
                                    "port": {"name": naming.PROXY_PORT_NAME},
                                }
                            },
                        }
                    ]
                },
            }
        ]
    }
    if p.ingress_class_name:
        spec["ingressClassName"] = p.ingress_class_name
    if p.ingress_tls_secret:
        spec["tls"] = [{"hosts": [p.ingress_host], "secretName": p.ingress_tls_secret}]
    metadata = _meta(naming.PROXY_SERVICE_NAME, cfg, naming.COMPONENT_PROXY)
    # ingress-nginx closes idle upstream connections after 60 s unless told otherwise.
    metadata["annotations"] = {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": timeout,
        "nginx.ingress.kubernetes.io/proxy-send-timeout": timeout,
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": spec,
    }


def proxy_network_policy(cfg: StackConfig) -> dict[str, Any]:
    """Return the proxy's NetworkPolicy: clients in on its port; out only DNS and sessions.

    With metrics on, the status and exporter ports admit only pods of the
    monitoring namespace.

    Args:
        cfg: the validated stack config.
    """
    ingress: list[dict[str, Any]] = [
        {"ports": [{"protocol": "TCP", "port": cfg.nginx_config().listen_port}]}
    ]
    if cfg.proxy.metrics_enabled:
        monitoring = {NAMESPACE_NAME_LABEL: cfg.proxy.monitoring_namespace}
        ingress.append(
            {
                "from": [{"namespaceSelector": {"matchLabels": monitoring}}],
                "ports": [
                    {"protocol": "TCP", "port": naming.PROXY_STATUS_PORT},
                    {"protocol": "TCP", "port": naming.PROXY_METRICS_PORT},
                ],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(naming.PROXY_SERVICE_NAME, cfg, naming.COMPONENT_PROXY),
        "spec": {
            "podSelector": {"matchLabels": proxy_selector()},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": [
                dns_egress_rule(),
                {
                    "to": [{"podSelector": {"matchLabels": naming.session_selector()}}],
                    "ports": [{"protocol": "TCP", "port": cfg.sessions.agent_port}],
                },
            ],
        },
    }
