"""Watched repositories: the SPEC grammar (spec), what a local repository says of itself (source),
and the registry with each repository's state (registry)."""
