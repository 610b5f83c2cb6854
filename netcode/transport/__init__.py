"""The netcode 1.02 transport (PROTOCOL.md): connect tokens, encrypted packets, replay protection,
the sans-IO server and client state machines and their twisted UDP shell. Knows bytes and addresses only.
"""
