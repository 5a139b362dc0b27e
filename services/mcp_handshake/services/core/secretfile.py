"""Shared secrets read from files: long enough, and readable by their owner only.

Every secret a worker loads from a file (webhook signing secrets, the gateway
key, the DPoP nonce key) passes the same test at start: at least
:data:`MIN_SECRET_BYTES` bytes, file mode 0600 or stricter. Where a deployment
shares files through a group (Kubernetes mounts Secrets 0440 for the pod's
``fsGroup``), ``group_read`` also allows the group to read. The error names
the file and what is wrong with it, never the secret.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MIN_SECRET_BYTES", "read_secret"]

MIN_SECRET_BYTES = 32


def read_secret(path: Path, what: str, *, group_read: bool = False) -> bytes:
    """The secret in ``path`` (surrounding whitespace stripped); ``ValueError`` naming
    ``what`` and the file when it is too short or open to others, ``OSError`` when it
    cannot be read."""
    mode = path.stat().st_mode  # OSError (a missing file) as for any file a worker reads
    value = path.read_bytes().strip()
    if mode & 0o077:
        raise ValueError(
            f"{what} {path}: must be readable by its owner only (mode {mode & 0o777:o}; chmod 600)"
        )
    if len(value) < MIN_SECRET_BYTES:
        raise ValueError(f"{what} {path}: must hold at least {MIN_SECRET_BYTES} bytes")
    return value
