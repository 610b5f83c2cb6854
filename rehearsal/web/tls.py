"""TLS for the HTTP port: HTTPS for the page and WSS for its link, from a PEM certificate and key.

Browsers grant a secure context (which the console needs away from ``localhost``) only over TLS; the operator
brings the certificate (their CA's, or e.g. ``openssl req -x509 ...`` for a test).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class TlsError(ValueError):
    """A certificate or key that cannot be used, naming the file."""


def server_tls_options(cert_file: str | Path, key_file: str | Path) -> Any:
    """twisted's TLS options for ``reactor.listenSSL`` from PEM files (TlsError if unreadable or mismatched)."""
    from twisted.internet import ssl  # needs pyOpenSSL; imported only when TLS is asked for

    texts = []
    for what, path in (("certificate", cert_file), ("key", key_file)):
        try:
            texts.append(Path(path).read_bytes())
        except OSError as exc:
            raise TlsError(f"TLS {what} {path}: {exc.strerror or exc}") from None
    try:
        certificate = ssl.PrivateCertificate.loadPEM(texts[0] + b"\n" + texts[1])
    except Exception as exc:  # pyOpenSSL raises its own Error types, twisted ValueError
        raise TlsError(f"TLS certificate {cert_file} / key {key_file}: not a matching PEM pair ({exc})") from None
    return certificate.options()
