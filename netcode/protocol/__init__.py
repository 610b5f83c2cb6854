"""What the server and every client say to each other above the channels, in one place both import:
poses, the binary input packet and its receiver, the response model and the message schema.
"""
