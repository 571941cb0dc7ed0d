"""Dataset factories by name: what the ``factory`` of a dataset catalog entry resolves to.

A factory is a dataset class registered next to its definition with :func:`register_dataset`, together with
the catalog attributes it reads: ``paths`` (constructor argument <- catalog attribute holding a path relative
to the data roots, located with ``glip.config.paths_catalog.locate``) and ``values`` (constructor argument <-
attribute passed as is). Adding a dataset format is one module with a registered class plus its import in
``glip.data.datasets``; its catalog entries (built-in or ``DATASETS.REGISTER``) name it as their ``factory``.
"""
import inspect
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Mapping, Optional, Tuple

from glip.config.paths_catalog import locate

# Factories of the reference that this package does not implement: naming one fails with NotImplementedError.
# A factory registered under one of these names takes precedence (remove the name here when adding it).
NOT_IMPLEMENTED = ("Background", "CocoDetection", "GQADataset", "PascalVOCDataset", "PhrasecutDetection",
                   "RefExpDataset", "TSVDataset")


@dataclass(frozen=True)
class DatasetFactory:
    """A registered dataset class and how its catalog entries map to constructor arguments."""

    name: str
    cls: type
    paths: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, str] = field(default_factory=dict)

    @property
    def parameters(self) -> FrozenSet[str]:
        """Keyword arguments the constructor declares."""
        return frozenset(inspect.signature(self.cls).parameters)

    def catalog_args(self, dataset: str, entry: Mapping) -> dict:
        """Constructor arguments from the catalog ``entry`` of ``dataset``, paths located under the data roots.

        Raises ValueError naming the attributes the entry lacks or has but this factory does not read.
        """
        attrs = {k: v for k, v in entry.items() if k != "factory"}
        wanted = list(self.paths.values()) + list(self.values.values())
        missing = [a for a in wanted if a not in attrs]
        unknown = sorted(set(attrs) - set(wanted))
        if missing or unknown:
            raise ValueError("catalog entry {!r} of factory {}: {}{}(it reads {})".format(
                dataset, self.name, "missing attributes {} ".format(missing) if missing else "",
                "unknown attributes {} ".format(unknown) if unknown else "", wanted))
        args = {arg: locate(attrs[attr]) for arg, attr in self.paths.items()}
        args.update({arg: attrs[attr] for arg, attr in self.values.items()})
        return args


DATASET_FACTORIES: Dict[str, DatasetFactory] = {}


def register_dataset(name: str, paths: Mapping[str, str], values: Optional[Mapping[str, str]] = None):
    """Class decorator: register the class as the dataset factory ``name``.

    ``paths`` / ``values``: ``{constructor argument: catalog attribute}`` (see the module docstring).
    """
    def decorate(cls):
        params = inspect.signature(cls).parameters
        unknown = [arg for arg in list(paths) + list(values or {}) if arg not in params]
        if unknown:
            raise TypeError("{} does not take the catalog arguments {}".format(cls.__name__, unknown))
        known = DATASET_FACTORIES.get(name)
        if known is not None and (known.cls.__module__, known.cls.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError("dataset factory {} is already registered ({})".format(name, known.cls))
        DATASET_FACTORIES[name] = DatasetFactory(name, cls, dict(paths), dict(values or {}))
        return cls

    return decorate


def get_factory(name: str, dataset: str = "?") -> DatasetFactory:
    """The factory registered as ``name`` (for the catalog entry ``dataset``, named in errors)."""
    if name in DATASET_FACTORIES:
        return DATASET_FACTORIES[name]
    if name in NOT_IMPLEMENTED:
        raise NotImplementedError("dataset factory {} (for {}) is not implemented".format(name, dataset))
    raise ValueError("unknown dataset factory {!r} for dataset {!r}; registered factories: {}".format(
        name, dataset, sorted(DATASET_FACTORIES)))


def factory_of(dataset: str, catalog) -> DatasetFactory:
    """The factory of the catalog entry ``dataset`` (no file is read)."""
    return get_factory(catalog.get(dataset)["factory"], dataset)


def resolve_dataset(dataset: str, catalog) -> Tuple[DatasetFactory, dict]:
    """``(factory, constructor arguments from the catalog)`` of the catalog entry ``dataset``."""
    entry = catalog.get(dataset)
    factory = get_factory(entry["factory"], dataset)
    return factory, factory.catalog_args(dataset, entry)
