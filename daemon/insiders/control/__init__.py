"""The control plane: insidersctl's Unix socket (socket, access), its connections (server) and what
each request does to the daemon (commands, the one translator between the daemon and the protocol).
"""
