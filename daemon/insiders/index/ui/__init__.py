"""The web pages people read: home, search, projects, builds; rendered once per change."""

from .build_logs import server_paths
from .pages import WebPages
from .routes import WebApp, register_not_found, security_headers

__all__ = ["WebApp", "WebPages", "register_not_found", "security_headers", "server_paths"]
