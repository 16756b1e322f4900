"""The layering: the `videogpt` library stands alone (it never imports the pipeline glue, the stages or the
benchmarks), and every stage script stays a thin script."""
import ast
from pathlib import Path

import pytest

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
