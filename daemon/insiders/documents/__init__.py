"""The page formats: what the index serves and a mirror writes, as pure functions of the store's
records (and of the upstream's pages). Neither the HTTP side nor the mirror owns them; both use
them, so a mirror serves the very bytes the daemon does.

    model       a project's files as an index page lists them (hosted, upstream, merged)
    render      PEP 503 HTML and PEP 691 JSON of a page model
    jsonapi     the JSON API documents (/pypi/NAME/json)
    negotiate   which format a request asks for (PEP 691)
    page        a rendered page and its variants (gzip, ETags)
"""
