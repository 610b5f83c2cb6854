"""Server addresses as the netcode standard serialises them inside connect tokens.

Wire form (little-endian, like every netcode integer):

* IPv4: type 1 (uint8), four octets a.b.c.d (uint8 each), port (uint16)         -> 7 bytes
* IPv6: type 2 (uint8), eight 16-bit groups a..h (uint16 each, LE), port (uint16) -> 19 bytes

Note that IPv6 groups are written little-endian, not in network order: ``2001:db8::1`` starts with
``01 20 b8 0d``. This follows the reference implementation exactly.
"""

import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

from netcode.transport.constants import ADDRESS_IPV4, ADDRESS_IPV6

_IPV6_GROUPS = struct.Struct(">8H")  # network order groups from packed bytes
_IPV6_GROUPS_LE = struct.Struct("<8H")
_PORT = struct.Struct("<H")


@dataclass(frozen=True, slots=True)
class Address:
    """An IP address and UDP port (IPv4 or IPv6)."""

    ip: IPv4Address | IPv6Address
    port: int
    # Endpoints look addresses up in dicts for every datagram, and ipaddress hashes in Python (hex of the int):
    # computed once here.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.ip, IPv4Address | IPv6Address):
            raise TypeError(f"ip must be an IPv4Address or IPv6Address, got {type(self.ip).__name__}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port must be an integer in [0, 65535], got {self.port!r}")
        object.__setattr__(self, "_hash", hash((self.ip, self.port)))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple:
        return Address, (self.ip, self.port)  # the hash of a str-derived value differs between processes

    def host_port(self) -> tuple[str, int]:
        """The socket-style ``(host, port)`` pair (what ``sendto`` takes)."""
        return str(self.ip), self.port

    @classmethod
    def parse(cls, text: str) -> "Address":
        """Parse ``"a.b.c.d:port"``, ``"[v6]:port"`` (port required)."""
        text = text.strip()
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
            if not sep:
                raise ValueError(f"IPv6 address needs the form [addr]:port, got {text!r}")
        else:
            host, sep, port = text.rpartition(":")
            if not sep or ":" in host:
                raise ValueError(f"address needs the form a.b.c.d:port or [v6]:port, got {text!r}")
        if not port.isdigit():
            raise ValueError(f"bad port in {text!r}")
        return cls.from_host_port(host, int(port))

    @classmethod
    def from_host_port(cls, host: str, port: int) -> "Address":
        """From a socket-style ``(host, port)`` pair.

        IPv4-mapped IPv6 addresses (what a dual-stack socket reports for IPv4 peers) become plain IPv4,
        and an IPv6 scope id (``%eth0``) is dropped, so that addresses compare equal to token entries.
        """
        ip = ip_address(host.split("%", 1)[0])
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return cls(ip, port)

    @classmethod
    def coerce(cls, value: "Address | str | tuple[str, int]") -> "Address":
        """Accept an Address, a ``"host:port"`` string or a ``(host, port)`` tuple."""
        if isinstance(value, Address):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, tuple) and len(value) == 2:
            return cls.from_host_port(str(value[0]), int(value[1]))
        raise TypeError(f"cannot make an Address from {value!r}")

    def encode(self) -> bytes:
        """Wire form (type byte, address, port)."""
        if isinstance(self.ip, IPv4Address):
            return bytes((ADDRESS_IPV4,)) + self.ip.packed + _PORT.pack(self.port)
        groups = _IPV6_GROUPS.unpack(self.ip.packed)
        return bytes((ADDRESS_IPV6,)) + _IPV6_GROUPS_LE.pack(*groups) + _PORT.pack(self.port)

    def __str__(self) -> str:
        if isinstance(self.ip, IPv6Address):
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"


def decode_address(data: bytes, offset: int) -> tuple[Address, int]:
    """Read one address at ``offset``; return it and the offset after it.

    Raises ValueError on an unknown address type or if the data ends early.
    """
    if offset >= len(data):
        raise ValueError("address truncated")
    kind = data[offset]
    if kind == ADDRESS_IPV4:
        end = offset + 7
        if end > len(data):
            raise ValueError("IPv4 address truncated")
        ip: IPv4Address | IPv6Address = IPv4Address(bytes(data[offset + 1 : offset + 5]))
        (port,) = _PORT.unpack_from(data, offset + 5)
        return Address(ip, port), end
    if kind == ADDRESS_IPV6:
        end = offset + 19
        if end > len(data):
            raise ValueError("IPv6 address truncated")
        groups = _IPV6_GROUPS_LE.unpack_from(data, offset + 1)
        ip = IPv6Address(_IPV6_GROUPS.pack(*groups))
        (port,) = _PORT.unpack_from(data, offset + 17)
        return Address(ip, port), end
    raise ValueError(f"bad address type {kind} (expected 1 = IPv4 or 2 = IPv6)")
