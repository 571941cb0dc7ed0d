"""Names a package exports but imports only on first use (PEP 562), so that importing the package stays cheap."""
import importlib
import sys


def lazy_exports(package: str, exports: dict[str, str]) -> tuple:
    """``(__getattr__, __dir__)`` for the module ``package``: each name of ``exports`` (name -> module holding
    it) is imported from its module on first access and then kept on the package.

    Usage, at the end of a package's ``__init__.py``: ``__getattr__, __dir__ = lazy_exports(__name__, EXPORTS)``.
    """

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError("module {!r} has no attribute {!r}".format(package, name))
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__


__all__ = ["lazy_exports"]
