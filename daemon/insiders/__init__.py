"""insidersd: a self-hosted Python package index that builds every new version tag of watched repos."""

__version__ = "0.1.0"
