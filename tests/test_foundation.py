"""The layout promises of the project: no shadowed standard library."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_operator_from_repo_root_is_the_stdlib() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import operator, sys; print(operator.__file__); print(operator.add(2, 3))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "mockfleet" not in out[0]
    assert Path(out[0]).name == "operator.py"
    assert out[1] == "5"


def test_no_top_level_mock_or_operator_package() -> None:
    for name in ("operator", "mock", "tower"):
        assert not (ROOT / name / "__init__.py").exists()


def test_components_import_as_mockfleet_namespaces() -> None:
    import mockfleet.mock
    import mockfleet.operator
    import mockfleet.tower

    for mod, part in (
        (mockfleet.mock, "mock"),
        (mockfleet.tower, "tower"),
        (mockfleet.operator, "operator"),
    ):
        assert Path(mod.__file__).parent.parent.parent.name == part
