"""A sanitised description made fit for this index's pages: one `h1` per page, nothing fetched
from another host unless the configuration allows it, and every part reachable by keyboard.

It runs on readme_renderer's output (already cleaned by nh3), re-emitting it token by token with
Python's own HTML parser, so that no markup can appear here that was not there before:
- headings move down one level (the page's title is its only `h1`), and the empty permalink
  anchors the renderers put in them, which are Tab stops that say nothing, are dropped;
- a picture from another host becomes a link to it (a click loads it, in its own tab): showing
  it would tell that host who reads which project, and when. `server.image-sources` names the
  sources whose pictures are shown (the Content-Security-Policy's own `img-src` syntax);
- a picture without alternative text gets its file's name;
- form fields go, but for a task list's checkboxes, which are named;
- a code block's `lang` (a language name, not the code's human language: `lang` must be a
  BCP 47 tag) becomes `data-lang`, and the block is a Tab stop, since it may scroll sideways.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from html import escape
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

_HEADINGS = {f"h{level}" for level in range(1, 7)}
_VOID = {"img", "br", "hr", "input", "wbr", "area", "col", "source"}
Attrs = list[tuple[str, str | None]]


def image_allowed(src: str, sources: Sequence[str]) -> bool:
    """Whether a picture's URL matches one of the CSP `img-src` sources the setting names."""
    url = urlsplit(src)
    for source in sources:
        if source.endswith(":") and "/" not in source:  # a scheme source: "https:"
            if url.scheme == source[:-1].lower():
                return True
            continue
        scheme, has_scheme, rest = source.partition("://")
        if not has_scheme:
            scheme, rest = "", source
        host = rest.split("/", 1)[0].lower()
        if scheme and url.scheme != scheme.lower():
            continue
        if url.scheme not in ("http", "https"):
            continue
        if fnmatch.fnmatchcase(url.netloc.lower(), host):
            return True
    return False


def _is_elsewhere(src: str) -> bool:
    url = urlsplit(src)
    return bool(url.netloc) or url.scheme not in ("", "http", "https")


def _file_name(src: str) -> str:
    path = urlsplit(src).path.rstrip("/")
    return unquote(path.rpartition("/")[2]) or "picture"


def _tag(name: str, attrs: Attrs, *, close: bool = False) -> str:
    parts = [name]
    for key, value in attrs:
        parts.append(key if value is None else f'{key}="{escape(value, quote=True)}"')
    return f"<{' '.join(parts)}{' /' if close else ''}>"


class _Rewriter(HTMLParser):
    def __init__(self, image_sources: Sequence[str]) -> None:
        super().__init__(convert_charrefs=False)
        self.image_sources = image_sources
        self.out: list[str] = []
        self.heading_depth = 0
        self.link_depth = 0
        self.pending_anchor: str | None = None  # an anchor in a heading, dropped if empty
        self.dropped_anchor = False

    def _flush(self) -> None:
        if self.pending_anchor is not None:
            self.out.append(self.pending_anchor)
            self.pending_anchor = None
            self.link_depth += 1

    def handle_starttag(self, tag: str, attrs: Attrs) -> None:
        self._flush()
        self._start(tag, attrs, close=False)

    def handle_startendtag(self, tag: str, attrs: Attrs) -> None:
        self._flush()
        self._start(tag, attrs, close=True)

    def _start(self, tag: str, attrs: Attrs, *, close: bool) -> None:
        values = dict(attrs)
        if tag in _HEADINGS:
            self.heading_depth += 1
            tag = f"h{min(int(tag[1]) + 1, 6)}"
        elif tag == "a":
            if self.heading_depth and (values.get("href") or "").startswith("#") and not close:
                self.pending_anchor = _tag(tag, attrs)
                return
            self.link_depth += 1
        elif tag == "pre":
            attrs = [("data-lang" if k == "lang" else k, v) for k, v in attrs]
            attrs.append(("tabindex", "0"))
        elif tag == "img":
            return self._image(attrs)
        elif tag == "input":
            # A task list's checkbox, read-only and named; any other field is no description's.
            if values.get("type") != "checkbox":
                return
            done = "checked" in values
            attrs = [
                ("type", "checkbox"),
                ("disabled", None),
                ("aria-label", "done" if done else "to do"),
            ]
            if done:
                attrs.append(("checked", None))
        self.out.append(_tag(tag, attrs, close=close))

    def _image(self, attrs: Attrs) -> None:
        values = dict(attrs)
        src = values.get("src") or ""
        alt = (values.get("alt") or "").strip()
        if _is_elsewhere(src) and not image_allowed(src, self.image_sources):
            host = urlsplit(src).netloc or urlsplit(src).scheme
            text = escape(f"{alt or _file_name(src)} (a picture from {host})")
            if self.link_depth:  # a link may not hold another link: the picture's name only
                self.out.append(f'<span class="picture-elsewhere">{text}</span>')
            else:
                self.out.append(
                    f'<a class="picture-elsewhere" href="{escape(src, quote=True)}"'
                    f' rel="nofollow noopener noreferrer" target="_blank">{text}</a>'
                )
            return
        if not alt and "alt" not in values:
            attrs = [*attrs, ("alt", _file_name(src))]
        self.out.append(_tag("img", attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self.pending_anchor is not None:
            self.pending_anchor = None  # an empty permalink: dropped
            return
        self._flush()
        if tag in _HEADINGS:
            self.heading_depth = max(0, self.heading_depth - 1)
            tag = f"h{min(int(tag[1]) + 1, 6)}"
        elif tag == "a":
            self.link_depth = max(0, self.link_depth - 1)
        if tag not in _VOID:
            self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if data and self.pending_anchor is not None:
            self._flush()
        self.out.append(data)

    def handle_entityref(self, name: str) -> None:
        self._flush()
        self.out.append(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self._flush()
        self.out.append(f"&#{name};")

    def handle_comment(self, data: str) -> None:
        pass  # a comment shows nothing

    def handle_decl(self, decl: str) -> None:
        pass


def rewrite(html: str, image_sources: Sequence[str] = ()) -> str:
    rewriter = _Rewriter(image_sources)
    rewriter.feed(html)
    rewriter.close()
    rewriter._flush()
    return "".join(rewriter.out)
