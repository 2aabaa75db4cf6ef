"""The code map's invariants (README, Development), held: what may import what, one error base.

Measured by tests/shape.py (`python -m tests.shape` prints the same figures).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import insiders
import insidersctl
from insiders.errors import InsidersError
from insidersctl.errors import InsidersctlError
from tests import shape


@pytest.mark.parametrize("package", sorted(shape.PACKAGES))
def test_no_import_circle(package: str) -> None:
    """Not even under TYPE_CHECKING, nor through an import inside a function."""
    assert shape.circles(shape.graph(package)) == []


@pytest.mark.parametrize("package", sorted(shape.PACKAGES))
def test_no_long_function_without_a_reason(package: str) -> None:
    unexplained = [
        f"{f.where} ({f.lines} lines)" for f in shape.long_functions(package) if not f.reasoned
    ]
    assert unexplained == []


def test_the_daemon_keeps_its_layers() -> None:
    """The layer table (tests/shape.py LAYERS, the README's code map): no import goes up it, and
    no part imports another, but index/ the http/ that serves it."""
    assert shape.layer_breaches(shape.graph("insiders")) == []


def test_the_layer_check_sees_a_breach() -> None:
    edges = {
        "insiders.store": {"insiders.watcher.report"},  # the data importing a part
        "insiders.mirror.sync": {"insiders.index.server"},  # a part importing another
        "insiders.index.server": {"insiders.http.asgi", "insiders.store"},  # allowed
        "insiders.newthing": {"insiders.errors"},  # a module the table does not know
    }
    assert shape.layer_breaches(edges) == [
        "insiders.mirror.sync -> insiders.index.server",
        "insiders.newthing -> insiders.errors: not in the layer table",
        "insiders.store -> insiders.watcher.report",
    ]


def test_the_shape_finds_a_circle_and_a_long_function() -> None:
    """The measures themselves: a circle through TYPE_CHECKING counts, a long function is seen."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert shape.circles(edges) == [["a", "b", "c"]]
    assert shape.circles({"a": {"b"}, "b": set()}) == []


def _modules(package: object) -> list[str]:
    path = package.__path__  # type: ignore[attr-defined]
    prefix = package.__name__ + "."  # type: ignore[attr-defined]
    return [m.name for m in pkgutil.walk_packages(path, prefix) if not m.name.endswith("__main__")]


@pytest.mark.parametrize(
    ("package", "base"), [(insiders, InsidersError), (insidersctl, InsidersctlError)]
)
def test_one_exception_base_per_side(package: object, base: type[Exception]) -> None:
    strays = []
    for name in _modules(package):
        module = importlib.import_module(name)
        for _, kind in inspect.getmembers(module, inspect.isclass):
            if (
                kind.__module__ == name
                and issubclass(kind, BaseException)
                and not issubclass(kind, base)
            ):
                strays.append(f"{name}.{kind.__name__}")
    assert strays == []


def test_the_daemons_exceptions_live_in_its_errors_module() -> None:
    """errors.py draws the tree of what insidersd raises on purpose: a class defined elsewhere is
    missing from that tree."""
    elsewhere = []
    for name in _modules(insiders):
        module = importlib.import_module(name)
        for _, kind in inspect.getmembers(module, inspect.isclass):
            if kind.__module__ == name != "insiders.errors" and issubclass(kind, InsidersError):
                elsewhere.append(f"{name}.{kind.__name__}")
    assert elsewhere == []


def test_the_store_speaks_its_own_types() -> None:
    """The store's records are its own: no type of the control protocol (insidersctl) in them, so
    the wire can change without the disk format knowing, and the other way round."""
    store = shape.modules("insiders")["insiders.store"]
    assert not {m for m in shape.absolute_imports("insiders.store", store) if "insidersctl" in m}
