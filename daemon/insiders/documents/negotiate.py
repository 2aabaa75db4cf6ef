"""Content negotiation for the simple API (PEP 691): pure, and cached by the caller per header."""

from __future__ import annotations

from enum import Enum


class Format(Enum):
    JSON = "application/vnd.pypi.simple.v1+json"
    HTML = "application/vnd.pypi.simple.v1+html"
    LEGACY_HTML = "text/html"

    @property
    def content_type(self) -> str:
        return self.value if self is not Format.LEGACY_HTML else "text/html; charset=utf-8"

    @property
    def is_html(self) -> bool:
        return self is not Format.JSON


# Which of our formats each media range may select, in our order of preference on a tie.
_ALIASES: dict[str, tuple[Format, ...]] = {
    "application/vnd.pypi.simple.v1+json": (Format.JSON,),
    "application/vnd.pypi.simple.latest+json": (Format.JSON,),
    "application/vnd.pypi.simple.v1+html": (Format.HTML,),
    "application/vnd.pypi.simple.latest+html": (Format.HTML,),
    "text/html": (Format.LEGACY_HTML,),
    "text/*": (Format.LEGACY_HTML,),
    # A client that takes anything gets HTML, the format every installer understands.
    "*/*": (Format.LEGACY_HTML, Format.HTML, Format.JSON),
    "application/*": (Format.HTML, Format.JSON),
}


def negotiate(accept: str | None) -> Format | None:
    """The best format for an Accept header; None when the header allows none of ours (406)."""
    if not accept or not accept.strip():
        return Format.LEGACY_HTML
    best: tuple[float, int, Format] | None = None
    for position, media_range in enumerate(accept.split(",")):
        media_type, quality = _parse_range(media_range)
        if quality <= 0:
            continue
        for fmt in _ALIASES.get(media_type, ()):
            # Higher quality wins; on equal quality the range listed first wins (-position).
            rank = (quality, -position, fmt)
            if best is None or rank[:2] > best[:2]:
                best = rank
            break
    return best[2] if best else None


def _parse_range(media_range: str) -> tuple[str, float]:
    media_type, *params = media_range.split(";")
    quality = 1.0
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                quality = float(value.strip())
            except ValueError:
                quality = 0.0
    return media_type.strip().lower(), quality


def from_query(value: str) -> Format | None:
    """`?format=` names one media type (PEP 691 allows such an override).

    A raw `+` in a query string decodes to a space, and PEP 691's own examples write it raw.
    """
    media_type = value.strip().lower().replace(" ", "+")
    return _ALIASES.get(media_type, (None,))[0]
