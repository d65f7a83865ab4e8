"""Every object the program declares is a valid manifest for Kubernetes 1.30+ (strict)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.pulumi.harness import StackRun, dev_config, run_stack

#: The oldest version we support and the newest the installed schemas know.
K8S_VERSIONS = ("1.30.0", "1.37.0")

VARIANTS: dict[str, dict[str, Any]] = {
    "dev": {},
    "ingress-ha": {
        "exposure": "ingress",
        "ingressHost": "gam.example.org",
        "ingressTlsSecret": "gam-tls",
        "ingressClassName": "nginx",
        "proxyReplicas": 3,
    },
    "loadbalancer-scheduled": {
        "exposure": "loadbalancer",
        "sessionNodeSelector": ["pool=gam"],
        "sessionTolerations": ["gam=yes:NoSchedule", "spot"],
        "proxyImage": "nginxinc/nginx-unprivileged@sha256:" + "0" * 64,
    },
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def stack(request: pytest.FixtureRequest) -> StackRun:
    return run_stack({**dev_config(), **VARIANTS[request.param]})


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_declared_object_passes_strict_schema_validation(
    stack: StackRun, version: str
) -> None:
    manifests = stack.manifests()
    assert len(manifests) >= 15
    for manifest in manifests:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - failure path
            pytest.fail(f"{manifest['kind']} {manifest['metadata']['name']}: {exc.message}")


def test_strict_validation_would_catch_a_misspelt_field(dev_run: StackRun) -> None:
    deployment = dev_run.manifests("Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
