"""A release's description as safe HTML, rendered the way the public index renders it.

readme_renderer is the public index's own renderer: Markdown through cmarkgfm, reStructuredText
through docutils, and every result cleaned by nh3 with its allow-list, so that `<script>`,
`javascript:` links and `on*=` attributes never reach a page. Writing a sanitiser here instead
would be the one place an upload could run code in a reader's browser.
"""

from __future__ import annotations

from collections.abc import Sequence
from email.message import Message

import readme_renderer.markdown
import readme_renderer.rst
import readme_renderer.txt
from markupsafe import Markup

from .readme_html import rewrite

# What the public index accepts as Markdown variants (description-content-type's `variant=`).
_MARKDOWN_VARIANTS = {"GFM", "CommonMark"}


def content_type_of(value: str | None) -> tuple[str, dict[str, str]]:
    """The MIME type and its parameters; the public index's default is reStructuredText."""
    if not value:
        return "text/x-rst", {}
    message = Message()
    message["content-type"] = value
    params = {k.lower(): str(v) for k, v in message.get_params(failobj=[])[1:]}
    return message.get_content_type(), params


def render_description(
    text: str | None, content_type: str | None, image_sources: Sequence[str] = ()
) -> Markup | None:
    """Sanitised HTML for `text`, or None when there is no description at all.

    Like the public index: Markdown when declared, reStructuredText by default, plain text when
    declared or when the reStructuredText does not parse. Then made fit for our pages (see
    readme_html): headings below the page's title, no picture from a host `image_sources` does
    not name.
    """
    if not text or not text.strip():
        return None
    kind, params = content_type_of(content_type)
    rendered: str | None = None
    if kind == "text/markdown":
        variant = params.get("variant", "GFM")
        rendered = readme_renderer.markdown.render(
            text, variant=variant if variant in _MARKDOWN_VARIANTS else "GFM"
        )
    elif kind == "text/x-rst":
        rendered = readme_renderer.rst.render(text)
    if rendered is None:
        rendered = readme_renderer.txt.render(text)
    return Markup(rewrite(rendered or "", image_sources))
