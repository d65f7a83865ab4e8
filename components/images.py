"""The one rule for container images: pinned by a version tag or a digest, never ``latest``.

Used by the stack-config model (a bad image stops ``pulumi up`` before anything is
declared) and by the policy pack (which checks every container of every resource).
"""

from __future__ import annotations

import re

__all__ = ["image_problem", "is_pinned_image"]

_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_NAME = re.compile(r"^[a-z0-9]+([._/:-][a-z0-9]+)*$")


def image_problem(image: str) -> str | None:
    """Return why ``image`` is not pinned, or None when it is.

    Args:
        image: an image reference such as ``nginxinc/nginx-unprivileged:1.27.4-alpine``.
    """
    if not isinstance(image, str) or not image or image != image.strip():
        return "image must be a non-empty reference without spaces"
    if _DIGEST.search(image):
        name = image[: image.index("@")]
    else:
        last = image.rsplit("/", 1)[-1]
        if ":" not in last:
            return f"image {image!r} has no tag: pin a version tag or a digest"
        name, tag = image.rsplit(":", 1)
        if tag == "latest":
            return f"image {image!r} uses 'latest': pin a version tag or a digest"
        if not _TAG.fullmatch(tag):
            return f"image {image!r} has an invalid tag {tag!r}"
    if "@" in name or not _NAME.fullmatch(name):
        return f"image {image!r} is not a valid image reference"
    return None


def is_pinned_image(image: str) -> bool:
    """Return True when ``image`` is pinned by a tag other than ``latest`` or by a digest.

    Args:
        image: an image reference.
    """
    return image_problem(image) is None
