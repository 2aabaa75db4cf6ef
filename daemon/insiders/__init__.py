"""insidersd: a self-hosted package index that builds every new tag of the repos it watches."""

__version__ = "0.1.0"
