"""The message layer above the transport (MESSAGES.md): sequence numbers and acks, RTT/loss, fragments,
reliable-ordered and unreliable channels, msgpack messages with a schema, and peers over the endpoints.
"""
