"""insidersctl: the small, fast client of insidersd, and the wire protocol both speak."""

__version__ = "0.1.0"
