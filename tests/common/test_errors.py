"""Every exception class the services define sits in the tree ``errors.py`` draws."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import services
from services.common import errors


def defined_exceptions() -> dict[str, type[BaseException]]:
    """Each exception class defined (not only imported) by a module of ``services``."""
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(services.__path__, "services."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                found[f"{module.__name__}.{name}"] = value
    return found


class TestErrorTree:
    def test_every_exception_is_a_pipeline_error(self) -> None:
        """A caller can catch everything the project raises on purpose by one base."""
        outside = [
            name
            for name, cls in defined_exceptions().items()
            if not issubclass(cls, errors.PipelineError)
        ]
        assert not outside

    def test_every_exception_is_drawn(self) -> None:
        """The docstring's tree names each class, so a reader finds all of them there."""
        tree = errors.__doc__ or ""
        missing = [
            name
            for name, cls in defined_exceptions().items()
            if not re.search(rf"^[\s│├└─]*{cls.__name__}\b", tree, re.MULTILINE)
        ]
        assert not missing

    def test_the_scan_finds_the_ingest_classes(self) -> None:
        """The walk reaches modules outside ``services.common`` (it could not fail otherwise)."""
        names = defined_exceptions()
        assert "services.ingest.errors.Refusal" in names
        assert "services.ingest.dedupe.DedupeUnavailable" in names
