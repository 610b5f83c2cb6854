"""Netcode in layers, each using only the ones above it in this list:

``transport`` (netcode 1.02: tokens, encrypted packets, UDP), ``messaging`` (acks, fragments, channels,
messages, peers), ``sync`` (snapshots of rigid objects and tissue patches), ``protocol`` (what server and
clients say: poses, inputs, response model, schema) and ``thin_client`` (the reference client).
Never imports physics/ or rehearsal/ (ARCHITECTURE.md).
"""
