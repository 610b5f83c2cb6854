"""Server secrets: the connect-token private key and the admin credential.

Each comes from the environment if set, else from a file in the data directory, else is generated into
that file with owner-only permissions (0600) on first run. Values are never logged or printed: callers
are told where a secret lives, not what it is.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


class SecretError(RuntimeError):
    """A secret that exists but cannot be trusted or read (bad permissions, bad encoding)."""


def load_or_create(data_dir: Path, name: str, nbytes: int = 32, env_var: str | None = None) -> bytes:
    """The secret `name`: from env_var (hex), else data_dir/name (hex), else newly generated there."""
    if env_var and os.environ.get(env_var):
        try:
            value = bytes.fromhex(os.environ[env_var].strip())
        except ValueError:
            raise SecretError(f"{env_var} must be hex") from None
        if len(value) != nbytes:
            raise SecretError(f"{env_var} must be {nbytes} bytes ({2 * nbytes} hex digits)")
        return value
    path = Path(data_dir) / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path, nbytes)
    value = secrets.token_bytes(nbytes)
    with os.fdopen(fd, "w") as f:
        f.write(value.hex() + "\n")
    return value


def _read(path: Path, nbytes: int) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    try:
        value = bytes.fromhex(path.read_text().strip())
    except ValueError:
        raise SecretError(f"{path} does not hold a hex secret") from None
    if len(value) != nbytes:
        raise SecretError(f"{path} must hold {nbytes} bytes")
    return value


def same_secret(given: bytes | str, expected: bytes | str) -> bool:
    """Constant-time comparison of credentials (never ==)."""
    a = given.encode() if isinstance(given, str) else given
    b = expected.encode() if isinstance(expected, str) else expected
    return secrets.compare_digest(a, b)
