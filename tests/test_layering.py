"""The layering of the code base, checked from the imports (also the ones inside functions).

- ``recsys`` (the library) imports neither ``ray_jobs`` nor ``serve_app``;
- serving imports no training loop (``recsys.train_loops``): models load for inference beside the model;
- an entrypoint ``ray_jobs/<stage>.py`` imports no other entrypoint (``pipeline`` composes them and may);
  the shared Ray glue in ``ray_jobs/common`` imports no entrypoint;
- entrypoints stay thin: about a page (file within 160 lines, ``run()`` within 60 lines).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT_MAX_LINES = 160
RUN_MAX_LINES = 60


def imported_modules(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def entrypoints() -> list[Path]:
    return [p for p in sorted((ROOT / "ray_jobs").glob("*.py")) if p.name != "__init__.py"]


def offenders(files: list[Path], forbidden) -> list[str]:
    found = []
    for path in files:
        bad = sorted(m for m in imported_modules(path) if forbidden(m))
        if bad:
            found.append(f"{path.relative_to(ROOT)} imports {', '.join(bad)}")
    return found


def test_imported_modules_reads_nested_and_from_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\nfrom a.b import c\n\ndef f():\n    from ray_jobs.cli import x\n    import serve_app.api\n")
    assert imported_modules(source) == {"os", "a.b", "a.b.c", "ray_jobs.cli", "ray_jobs.cli.x", "serve_app.api"}


def test_library_imports_no_jobs_or_serving():
    assert offenders(python_files("recsys"), lambda m: m.split(".")[0] in {"ray_jobs", "serve_app"}) == []


def test_serving_imports_no_training_loops():
    assert offenders(python_files("serve_app"), lambda m: m.startswith("recsys.train_loops")) == []


def test_entrypoints_import_no_other_entrypoint():
    stages = {f"ray_jobs.{p.stem}" for p in entrypoints()}

    def is_stage(module: str) -> bool:
        return any(module == s or module.startswith(s + ".") for s in stages)

    composing = [p for p in entrypoints() if p.stem != "pipeline"]
    assert offenders(composing, is_stage) == []
    assert offenders(python_files("ray_jobs/common"), is_stage) == []


@pytest.mark.parametrize("path", entrypoints(), ids=lambda p: p.stem)
def test_entrypoint_is_thin(path):
    lines = path.read_text().count("\n")
    assert lines <= ENTRYPOINT_MAX_LINES, f"{path.name} has {lines} lines (limit {ENTRYPOINT_MAX_LINES})"
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == "run":
            length = node.end_lineno - node.lineno + 1
            assert length <= RUN_MAX_LINES, f"{path.name}: run() has {length} lines (limit {RUN_MAX_LINES})"
