"""The pinned-image rule shared by the stack config and the policy pack."""

from __future__ import annotations

import pytest

from components.images import image_problem, is_pinned_image

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "image",
    [
        "nginxinc/nginx-unprivileged:1.27.4-alpine",
        "ghcr.io/gamgui/gamgui-session:0.1.0",
        "registry.example:5000/team/img:v2",
        f"nginx@{DIGEST}",
        f"nginx:1.27@{DIGEST}",
    ],
)
def test_pinned_images_are_accepted(image: str) -> None:
    assert is_pinned_image(image)


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("nginx:latest", "uses 'latest'"),
        ("nginx", "has no tag"),
        ("registry.example:5000/nginx", "has no tag"),
        ("", "non-empty"),
        (" nginx:1 ", "non-empty"),
        ("nginx:bad tag", "invalid tag"),
        ("nginx@sha256:short", "not a valid image reference"),
        ("UPPER/Case:1", "not a valid image reference"),
    ],
)
def test_unpinned_or_malformed_images_are_refused_with_the_reason(image: str, problem: str) -> None:
    found = image_problem(image)
    assert found is not None and problem in found
