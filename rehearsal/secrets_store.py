"""Server secrets: the connect-token private key and the admin credential.

Each comes from the environment if set, else from a file in the data directory, else is generated into
that file with owner-only permissions (0600) on first run. Values are never logged or printed: callers
are told where a secret lives, not what it is.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path


class SecretError(RuntimeError):
    """A secret that exists but cannot be trusted or read (bad permissions, bad encoding)."""


@dataclass(frozen=True)
class SecretSpec:
    """A server secret: its file name in the data directory, size in bytes, and overriding variable."""

    name: str
    nbytes: int
    env_var: str


TOKEN_KEY = SecretSpec("token_key", 32, "REHEARSAL_TOKEN_KEY")  # signs netcode connect tokens
ADMIN_CREDENTIAL = SecretSpec("admin_credential", 24, "REHEARSAL_ADMIN_CREDENTIAL")  # admin API bearer (hex)


def server_secret(data_dir: Path, spec: SecretSpec) -> bytes:
    """A server secret from its variable or its file, creating the data directory (0700) if needed."""
    Path(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    return load_or_create(data_dir, spec.name, spec.nbytes, env_var=spec.env_var)


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
