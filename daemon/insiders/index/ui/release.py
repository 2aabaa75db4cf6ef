"""What a release's core metadata tells a reader, as plain data: how to install it from this
index, what it depends on (with extras and markers), its classifiers, license and author.

Pure functions of the parsed metadata (packaging's `parse_email` fields) and the site, tested
with tables; the project template only lays them out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.utils import getaddresses
from typing import Any

import msgspec
from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement

from .views import Site


class InstallLine(msgspec.Struct, frozen=True, kw_only=True):
    tool: str  # "pip", "uv"
    command: str


class Requirements(msgspec.Struct, frozen=True, kw_only=True):
    """One group of Requires-Dist: the plain ones (extra None) or those of one extra."""

    extra: str | None
    items: tuple[str, ...]  # each as written, without the `extra == "…"` part of its marker


class Person(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    email: str | None = None


class Classifiers(msgspec.Struct, frozen=True, kw_only=True):
    topic: str  # "License", "Programming Language", ...
    values: tuple[str, ...]  # the rest of each classifier: "OSI Approved :: MIT License"


TOKEN_VARIABLE = "INSIDERS_TOKEN"


def index_url(site: Site) -> str:
    """The simple URL as a copied command should spell it: with the token in it when every read
    needs one (from an environment variable, so the line can be shared as it stands)."""
    url = site.simple_url
    if site.read_access != "token":
        return url
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}__token__:${{{TOKEN_VARIABLE}}}@{rest}"


def install_lines(site: Site, name: str, pin: str | None) -> list[InstallLine]:
    """The install commands for this index: never a bare `pip install NAME`, which on a machine
    not pointed here goes to the public index, where someone else may own the name."""
    requirement = f"{name}=={pin}" if pin else name
    url = index_url(site)
    quoted = f'"{url}"' if site.read_access == "token" else url
    return [
        InstallLine(tool="pip", command=f"pip install --index-url {quoted} {requirement}"),
        InstallLine(tool="uv", command=f"UV_DEFAULT_INDEX={quoted} uv pip install {requirement}"),
    ]


_EXTRA = re.compile(
    r'^extra == "([^"]+)"$|^extra == "([^"]+)" and (.+)$|^(.+) and extra == "([^"]+)"$'
)


def _strip_extra(marker: Marker | None) -> tuple[str | None, str | None]:
    """(the extra a marker asks for, the rest of the marker): `python_version >= "3.9" and
    extra == "socks"` is ("socks", 'python_version >= "3.9"'). A marker that joins the extra
    with `or` is not one extra's: it is kept whole."""
    if marker is None:
        return None, None
    text = str(marker)  # packaging's normal form: `extra == "name"`, double quotes
    match = _EXTRA.match(text)
    if match is None:
        return None, text
    extra = match[1] or match[2] or match[5]
    rest = match[3] or match[4]
    if rest and " or " in rest and not (rest.startswith("(") and rest.endswith(")")):
        return None, text
    return extra, rest


def requirements(fields: Mapping[str, Any]) -> list[Requirements]:
    """Requires-Dist grouped: the ones every install gets first, then one group per extra (in
    Provides-Extra's order, an extra with no requirement included)."""
    plain: list[str] = []
    by_extra: dict[str, list[str]] = {
        str(extra): [] for extra in fields.get("provides_extra") or []
    }
    for raw in fields.get("requires_dist") or []:
        try:
            requirement = Requirement(str(raw))
        except InvalidRequirement:
            plain.append(str(raw))
            continue
        extra, marker = _strip_extra(requirement.marker)
        requirement.marker = None
        text = str(requirement) + (f"; {marker}" if marker else "")
        (by_extra.setdefault(extra, []) if extra else plain).append(text)
    groups = [Requirements(extra=None, items=tuple(plain))] if plain else []
    groups += [Requirements(extra=e, items=tuple(items)) for e, items in by_extra.items()]
    return groups


def classifiers(fields: Mapping[str, Any]) -> list[Classifiers]:
    groups: dict[str, list[str]] = {}
    for classifier in fields.get("classifiers") or []:
        topic, _, rest = str(classifier).partition(" :: ")
        groups.setdefault(topic.strip(), []).append(rest.strip() or topic.strip())
    return [Classifiers(topic=t, values=tuple(v)) for t, v in groups.items()]


def license_of(fields: Mapping[str, Any]) -> str | None:
    """License-Expression, else License (a short one: some put the whole text there), else the
    license classifiers' names."""
    expression = fields.get("license_expression")
    if isinstance(expression, str) and expression.strip():
        return expression.strip()
    text = fields.get("license")
    if isinstance(text, str) and text.strip():
        first = text.strip().splitlines()[0]
        return first if len(first) <= 80 else first[:79] + "…"
    names = [
        str(c).rpartition(" :: ")[2]
        for c in fields.get("classifiers") or []
        if str(c).startswith("License ::") and " :: " in str(c)[len("License ::") :]
    ]
    return ", ".join(names) or None


def people(name_field: Any, email_field: Any) -> list[Person]:
    """Author (or Maintainer) and its email field, which core metadata writes as
    `Name <email>, Other <email>` when a person has both."""
    found: list[Person] = []
    if isinstance(email_field, str) and email_field.strip():
        for name, email in getaddresses([email_field]):
            if email and "@" in email:
                found.append(Person(name=name or email, email=email))
            elif name:
                found.append(Person(name=name))
    if isinstance(name_field, str) and name_field.strip():
        named = {p.name for p in found}
        for name in (n.strip() for n in name_field.split(",")):
            if name and name not in named:
                found.insert(0, Person(name=name))
    return found
