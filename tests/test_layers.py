"""The layering: the `videogpt` library stands alone (it never imports the pipeline glue, the stages or the
benchmarks), and every stage script stays a thin script."""
import ast
import functools
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GLUE = {"pipeline", "stages", "bench"}


def imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "videogpt").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_never_imports_the_glue(path):
    wrong = [name for name in imported_modules(path) if name.split(".")[0] in GLUE]
    assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}"


def test_the_import_check_sees_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\ndef f():\n    from pipeline import paths\n    import stages._common\n")
    assert [n for n in imported_modules(module) if n.split(".")[0] in GLUE] == ["pipeline", "stages._common"]


@pytest.mark.parametrize("path", sorted((ROOT / "stages").glob("*.py")), ids=lambda p: p.name)
def test_stage_scripts_are_thin(path):
    source = path.read_text()
    assert len(source.splitlines()) < 40
    assert "sys.path" not in source  # stages run as `python -m stages.<name>` from the repository root


def library_closure(module: str) -> set[str]:
    """Every `videogpt` module `module` imports, directly or through other videogpt modules (static, by ast)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        path = ROOT / (name.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / name.replace(".", "/") / "__init__.py"
        if name in seen or not path.exists():
            continue
        seen.add(name)
        todo += [n for n in imported_modules(path) if n.split(".")[0] == "videogpt"]
    return seen


@pytest.mark.parametrize("stage", ["train_vqvae", "train_prior", "tokenize"])
def test_training_stages_do_not_reach_the_fvd_code(stage):
    """The FVD code (videogpt.evaluation) is not under the training stages, so editing it retrains nothing
    (dvc.yaml lists their deps accordingly)."""
    closure = library_closure(f"stages.{stage}")
    assert "videogpt.training" in closure or stage == "tokenize"  # the walk does follow the imports
    assert "videogpt.evaluation" not in closure
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"]
    assert "videogpt/evaluation.py" not in deps and f"stages/{stage}.py" in deps


@pytest.mark.parametrize("path", sorted((ROOT / "bench").glob("*.py")), ids=lambda p: p.name)
def test_bench_scripts_import_names_that_exist(path):
    """Every `from videogpt... import name` of a bench script, also those inside functions (which no import of
    the script runs), names something the library has: a library change cannot silently break a benchmark."""
    import importlib

    missing = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] == "videogpt":
            module = importlib.import_module(node.module)
            missing += [f"{node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)
                        and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    assert not missing, f"{path.name} imports names the library does not have: {missing}"


def library_modules() -> list[str]:
    names = []
    for path in sorted((ROOT / "videogpt").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        names.append(".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
    return names


@functools.lru_cache(maxsize=None)
def cached_closure(module: str) -> frozenset[str]:
    return frozenset(library_closure(module))


@pytest.mark.parametrize("module", library_modules())
def test_no_library_module_imports_itself_back(module):
    """No import circle inside the library, counting imports inside functions too (the way circles used to be
    hidden): e.g. the models import videogpt.saved for SavedModel, and the loaders that name the models
    (videogpt.checkpoint) sit above them."""
    back = sorted(d for d in cached_closure(module) - {module} if module in cached_closure(d))
    assert not back, f"{module} is imported back by {back}"


def test_metrics_package_does_not_reach_the_models():
    """The metrics measure videos and features; what judges the models (running them) is videogpt.reports."""
    for module in [m for m in library_modules() if m.startswith("videogpt.metrics")]:
        reached = library_closure(module) & {"videogpt.vqvae", "videogpt.prior", "videogpt.sampling"}
        assert not reached, f"{module} reaches {sorted(reached)}"
