"""The web pages people read: home, search, projects, builds; rendered once per change."""

from .pages import WebPages
from .routes import register

__all__ = ["WebPages", "register"]
