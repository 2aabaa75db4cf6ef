"""Mirror targets: static copies of the hosted index that the daemon keeps current.

A target is a directory (served by nginx, see the shipped site config) or an S3-compatible bucket.
`layout` says what goes where (pure), `targets` writes it, `sync` keeps every target converging
to the store, `restore` fills an empty store from a target.
"""
