"""The HTTP side: a PEP 503/691 index, uploads, and the fallback to an upstream index."""
