"""The benchmark of insidersd against its peers; `bench/run.py` runs it (see bench/README.md)."""
