"""Addresses: parsing, normalisation and the token wire form (IPv6 groups little-endian)."""

from ipaddress import IPv4Address, IPv6Address

import pytest

from netcode.transport.address import Address, decode_address

from .wire_helpers import IPV4_127_0_0_1_40000, IPV6_2001_DB8__1_40001


def test_wire_form():
    assert Address.parse("127.0.0.1:40000").encode() == IPV4_127_0_0_1_40000
    assert Address.parse("[2001:db8::1]:40001").encode() == IPV6_2001_DB8__1_40001
    assert IPV6_2001_DB8__1_40001[:5] == b"\x02\x01\x20\xb8\x0d"


def test_decode_round_trip_and_offsets():
    data = b"junk" + IPV4_127_0_0_1_40000 + IPV6_2001_DB8__1_40001
    first, offset = decode_address(data, 4)
    second, end = decode_address(data, offset)
    assert (str(first), str(second), end) == ("127.0.0.1:40000", "[2001:db8::1]:40001", len(data))


@pytest.mark.parametrize(
    "data", [b"", b"\x00" + bytes(6), b"\x03" + bytes(18), IPV4_127_0_0_1_40000[:-1], IPV6_2001_DB8__1_40001[:-1]]
)
def test_decode_errors(data):
    with pytest.raises(ValueError):
        decode_address(data, 0)


def test_parse_and_coerce():
    assert Address.parse(" 10.1.2.3:1 ") == Address(IPv4Address("10.1.2.3"), 1)
    assert Address.coerce(("::1", 5)) == Address(IPv6Address("::1"), 5)
    assert Address.coerce(Address.parse("[::1]:5")) == Address.parse("[::1]:5")
    # A dual-stack socket reports IPv4 peers as mapped IPv6; they must equal the token's IPv4 entry.
    assert Address.from_host_port("::ffff:127.0.0.1", 40000) == Address.parse("127.0.0.1:40000")
    assert Address.from_host_port("fe80::1%eth0", 9) == Address(IPv6Address("fe80::1"), 9)


@pytest.mark.parametrize("text", ["127.0.0.1", "::1:80", "[::1]80", "1.2.3.4:x", "1.2.3.4:70000", "host:80"])
def test_parse_errors(text):
    with pytest.raises(ValueError):
        Address.parse(text)


def test_coerce_rejects_other_types():
    with pytest.raises(TypeError):
        Address.coerce(123)  # type: ignore[arg-type]


def test_hash_is_cached_and_survives_pickling():
    """Endpoints key dicts by Address for every datagram: the hash is computed once, equal for equal addresses."""
    import pickle

    for text in ("127.0.0.1:40000", "[2001:db8::1]:40001"):
        a, b = Address.parse(text), Address.parse(text)
        assert a == b and hash(a) == hash(b) == hash((a.ip, a.port))
        copy = pickle.loads(pickle.dumps(a))
        assert copy == a and hash(copy) == hash(a) and {a: 1}[copy] == 1
    assert Address.parse("127.0.0.1:1") != Address.parse("127.0.0.1:2")
    assert Address.parse("[::1]:5").host_port() == ("::1", 5)
    assert repr(Address.parse("127.0.0.1:1")) == "Address(ip=IPv4Address('127.0.0.1'), port=1)"
