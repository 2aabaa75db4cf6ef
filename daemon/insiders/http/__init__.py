"""The HTTP side of the daemon: the server (hypercorn under trio) and what this project adds to it
(connection limits, bounded bodies, graceful stop, reason phrases, TLS reloads), the gates every
request passes (the browser's rules, the read gate) and the route table (routes.py) that names
every URL the daemon answers, who may call it and its handler."""
