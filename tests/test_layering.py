"""The package's imports run one way: tools -> engine -> data / evaluation -> modeling -> structures / layers /
config (issue "the seams", point 9). Every import statement of glip/ (module level or inside functions, relative
ones resolved) and every lazily exported name (``EXPORTS`` of a package ``__init__``) is checked against the
allowed directions listed here."""
import ast
from pathlib import Path

GLIP = Path(__file__).resolve().parents[1] / "glip"

BASE = {"glip.structures", "glip.layers", "glip.config", "glip.text", "glip.utils"}
# unit -> the units it may import (a unit may always import itself). glip.utils.cli, the command lines and config
# merging of the tools (the one place below tools/ that writes configs), sits just below the engine, whose
# finetune loop iterates its runs; it imports no engine code.
ALLOWED = {
    "glip": {"*"},  # the public API (lazy names of every layer)
    "glip.api": {"glip.engine", "glip.utils.cli"} | BASE,  # load_model / predict / annotate, on the predictor
    "glip.export": {"glip.data", "glip.modeling"} | BASE,  # deployment graphs of the model (beside the engine)
    "glip.engine": {"glip.utils.cli", "glip.data", "glip.evaluation", "glip.solver", "glip.modeling"} | BASE,
    "glip.utils.cli": {"glip.data", "glip.evaluation", "glip.solver", "glip.modeling"} | BASE,
    "glip.data": {"glip.structures", "glip.layers", "glip.config", "glip.text", "glip.utils"},
    "glip.evaluation": {"glip.structures", "glip.layers", "glip.config", "glip.utils"},
    "glip.modeling": {"glip.structures", "glip.layers", "glip.config", "glip.text", "glip.utils"},
    "glip.solver": {"glip.utils"},
    "glip.structures": {"glip.layers", "glip.utils"},
    "glip.layers": {"glip._C", "glip.utils"},
    "glip.config": {"glip.text", "glip.utils"},
    "glip.text": set(),
    "glip.utils": set(),  # comm, logger, lazy, visualize, profiling: leaves
}
# (importing module, imported module): why the exception is allowed
EXCEPTIONS = {
    ("glip.utils.profiling", "glip.engine.benchmark"):
        "lazy re-export of benchmark_model / coco_prompt (moved up to the engine) for tools/benchmark.py",
}


def unit_of(module: str) -> str:
    """The longest unit of ALLOWED that ``module`` is, or lies in (``glip._C`` is its own unit)."""
    if module == "glip._C":
        return module
    matches = [u for u in ALLOWED if module == u or module.startswith(u + ".")]
    return max(matches, key=len)


def module_name(path: Path, root: Path = GLIP) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = GLIP):
    """(line, imported module) of every import in ``path``, relative imports resolved; ``from glip import _C``
    gives ``glip._C``; the string values of an ``EXPORTS`` dict in a package ``__init__`` count as imports."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:  # ``from glip.engine import benchmark`` imports glip.engine.benchmark
                submodule = base + "." + alias.name
                path_of = root.parent.joinpath(*submodule.split("."))
                is_module = path_of.with_suffix(".py").exists() or path_of.is_dir() or submodule == "glip._C"
                yield node.lineno, submodule if is_module else base
        elif (isinstance(node, ast.Assign) and path.name == "__init__.py"
              and any(isinstance(t, ast.Name) and t.id == "EXPORTS" for t in node.targets)):
            yield from ((node.lineno, v.value) for v in node.value.values if isinstance(v, ast.Constant))


def violations(root: Path = GLIP):
    found = []
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        allowed = ALLOWED[unit_of(importer)] | {unit_of(importer)}
        for line, imported in imported_modules(path, root):
            if not imported.startswith("glip.") or "*" in allowed or (importer, imported) in EXCEPTIONS:
                continue
            if unit_of(imported) not in allowed:
                found.append("{}:{} imports {}".format(path.relative_to(root.parent), line, imported))
    return found


def test_imports_run_one_way():
    assert violations() == []


def test_every_unit_is_placed_and_the_walk_sees_lazy_and_relative_imports():
    packages = {module_name(p) for p in GLIP.rglob("__init__.py")}
    assert all(unit_of(p) for p in packages)
    init = GLIP / "modeling" / "backbone" / "__init__.py"
    assert {m for _, m in imported_modules(init)} == {"glip.modeling.backbone.build"}
    assert ("glip.data.build" in {m for _, m in imported_modules(GLIP / "data" / "__init__.py")})
    assert any(m == "glip._C" for _, m in imported_modules(GLIP / "layers" / "extension.py"))


def test_an_upward_import_is_reported(tmp_path):
    files = {
        "__init__.py": "from glip.engine import run\n",  # the public API may
        "data/__init__.py": "EXPORTS = {'make_data_loader': 'glip.data.build', 'evaluate': 'glip.evaluation'}\n",
        "data/positive_map.py": "def load():\n    from glip.modeling.language import build_tokenizer\n",
        "modeling/language.py": "from . import tokenizer\nfrom ..engine import run\n",
        "utils/profiling.py": "def f():\n    from glip.engine import benchmark\n",
        "engine/run.py": "from glip.utils import cli\n",
        "engine/benchmark.py": "",
    }
    for name, text in files.items():
        (tmp_path / "glip" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "glip" / name).write_text(text)
    assert violations(tmp_path / "glip") == [
        "glip/data/__init__.py:1 imports glip.evaluation",
        "glip/data/positive_map.py:2 imports glip.modeling.language",
        "glip/modeling/language.py:2 imports glip.engine.run",
    ]
