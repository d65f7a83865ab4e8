"""Copy GAM's credential files from the read-only mount into GAMCFGDIR.

GAM rewrites ``oauth2.txt`` (refreshed tokens) and may touch the others, so
they cannot stay on a read-only Secret volume. Only the known file names are
copied; Kubernetes' ``..data`` symlinks are followed, contents are never read
into logs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["CREDENTIAL_FILES", "copy_credentials"]

CREDENTIAL_FILES: tuple[str, ...] = ("oauth2.txt", "oauth2service.json", "client_secrets.json")


def copy_credentials(source: Path | None, target: Path) -> list[str]:
    """Copy the credential files found in ``source`` into ``target`` with mode 0600.

    Args:
        source: the credentials mount (GAM_CREDENTIALS_DIR); ``None`` or missing
            means no credentials, which is not an error (GAM reports it per command).
        target: GAMCFGDIR, writable.

    Returns:
        The names of the files copied, in :data:`CREDENTIAL_FILES` order.
    """
    if source is None or not source.is_dir():
        return []
    copied: list[str] = []
    for name in CREDENTIAL_FILES:
        src = source / name
        if not src.is_file():
            continue
        dst = target / name
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
            shutil.copyfileobj(inp, out)
        os.chmod(dst, 0o600)  # O_CREAT's mode does not apply to an existing file
        copied.append(name)
    return copied
