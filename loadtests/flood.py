"""A garbage flood from one address: ``python -m loadtests.flood HOST PORT SECONDS RATE SEED``.

Sends ``RATE`` datagrams a second for ``SECONDS`` (both bounded) to a loopback server from one UDP socket,
a seeded mix of: random bytes of random length (1-1,200) (30%), each netcode packet-type prefix followed by
random bytes (30%), connection-request-sized datagrams (1,078 bytes, type 0) with random contents (10%),
and **well-formed connection requests with a forged token** (30%: the version string, the server's
protocol id, an expiry an hour ahead, a random nonce and 1,024 random bytes; the costliest for the
server, which must try to decrypt each token). Prints one JSON line of what it sent.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import sys
import time

from loadtests.relay import LOOPBACK
from netcode.transport.constants import CONNECT_TOKEN_NONCE_BYTES, CONNECT_TOKEN_PRIVATE_BYTES, VERSION_INFO
from rehearsal.settings import PROTOCOL_ID

REQUEST_BYTES = 1078


def forged_request(rng: random.Random, protocol_id: int = PROTOCOL_ID) -> bytes:
    """A connection request that passes every check but the private token's decryption."""
    head = struct.pack("<QQ", protocol_id, int(time.time()) + 3600)
    return b"\x00" + VERSION_INFO + head + rng.randbytes(CONNECT_TOKEN_NONCE_BYTES + CONNECT_TOKEN_PRIVATE_BYTES)


def garbage(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.3:
        return rng.randbytes(rng.randint(1, 1200))
    if kind < 0.6:
        return bytes([rng.randrange(0, 7) | (rng.randrange(0, 16) << 4)]) + rng.randbytes(rng.randint(0, 1199))
    if kind < 0.7:
        return b"\x00" + rng.randbytes(REQUEST_BYTES - 1)
    return forged_request(rng)


def flood(host: str, port: int, seconds: float, rate: float, seed: int = 0) -> dict:
    """Send the garbage (see the module doc); returns counts."""
    if host not in LOOPBACK:
        raise ValueError("loopback only")
    seconds = max(0.0, min(float(seconds), 3600.0))
    rate = max(1.0, min(float(rate), 200_000.0))
    rng = random.Random(seed)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sent = errors = sent_bytes = 0
    start = time.monotonic()
    end = start + seconds
    for _ in range(int(seconds * rate) + 1):
        now = time.monotonic()
        if now >= end:
            break
        due = start + sent / rate
        if due > now:
            time.sleep(min(due - now, 0.01))
        data = garbage(rng)
        try:
            sock.sendto(data, (host, port))
            sent += 1
            sent_bytes += len(data)
        except OSError:
            errors += 1
    elapsed = time.monotonic() - start
    sock.close()
    return {
        "sent": sent,
        "bytes": sent_bytes,
        "errors": errors,
        "seconds": elapsed,
        "rate": sent / max(elapsed, 1e-6),
        "source": "one address",
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        host, port, seconds, rate = argv[0], int(argv[1]), float(argv[2]), float(argv[3])
        seed = int(argv[4]) if len(argv) > 4 else 0
        print(json.dumps(flood(host, port, seconds, rate, seed)))
    except (IndexError, ValueError) as exc:
        print(f"usage: python -m loadtests.flood HOST PORT SECONDS RATE [SEED] ({exc})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
