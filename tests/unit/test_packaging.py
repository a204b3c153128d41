"""Tests of how the code is packaged: the Lambda layer's pins match pyproject.toml, and every
third-party package shared/ imports is in the layer or the runtime. Which part may import which
(no console or local stack in functions/ and shared/) is import-linter's: the contracts under
[tool.importlinter] in pyproject.toml, run by `make lint`."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYER_REQUIREMENTS = ROOT / "shared" / "requirements.txt"
PYPROJECT = ROOT / "pyproject.toml"

#: Modules the Lambda Python runtime provides without the layer.
RUNTIME_PROVIDED = {"boto3", "botocore"}
#: Import name -> distribution name, where they differ.
DISTRIBUTION_OF = {"aws_lambda_powertools": "aws-lambda-powertools"}

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*(.*?)\s*$")


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(line: str) -> tuple[str, str]:
    match = _REQUIREMENT.match(line)
    assert match, f"unparseable requirement {line!r}"
    return normalize(match.group(1)), match.group(2).replace(" ", "")


def layer_pins() -> dict[str, str]:
    lines = [line.split("#", 1)[0].strip() for line in LAYER_REQUIREMENTS.read_text().splitlines()]
    return dict(parse_requirement(line) for line in lines if line)


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return dict(parse_requirement(dep) for dep in project["dependencies"])


def imported_modules(source: str, *, package: str = "") -> set[str]:
    """Fully qualified modules imported by ``source`` (relative imports resolved against ``package``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                found.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                found.add(node.module)
    return found


def imports_under(directory: str) -> dict[str, set[str]]:
    """For every .py file under ``ROOT/directory``: the top-level packages it imports."""
    result: dict[str, set[str]] = {}
    for path in sorted((ROOT / directory).rglob("*.py")):
        relative = path.relative_to(ROOT)
        package = ".".join(relative.parent.parts)
        modules = imported_modules(path.read_text(), package=package)
        result[str(relative)] = {m.split(".")[0] for m in modules}
    return result


# --------------------------------------------------------------------------------------------
# The helpers themselves (so a scan that finds nothing cannot pass by accident)
# --------------------------------------------------------------------------------------------


def test_the_import_scan_sees_every_form_of_import() -> None:
    # GIVEN source with plain, from, dotted, aliased, nested and relative imports
    source = (
        "import textual\n"
        "import tui.app as a\n"
        "from llmbatch.cli import main\n"
        "def f():\n    from llmbatch.local.simulator import start_simulator\n"
        "from . import sibling\n"
        "from ..endpoints import base\n"
    )

    # WHEN it is scanned as a module of shared.sub
    modules = imported_modules(source, package="shared.sub")

    # THEN each import is found, relative ones resolved inside the package
    assert {
        "textual",
        "tui.app",
        "llmbatch.cli",
        "llmbatch.local.simulator",
        "shared.sub",
        "shared.endpoints",
    } <= modules


def test_requirement_lines_are_parsed_to_normalized_names_and_pins() -> None:
    # GIVEN / WHEN requirement strings in the styles both files use
    # THEN names are normalized and the version specifier kept
    assert parse_requirement("aws_lambda_powertools==3.37.0") == ("aws-lambda-powertools", "==3.37.0")
    assert parse_requirement("moto[server] == 5.2.5") == ("moto", "==5.2.5")
    assert parse_requirement("types-PyYAML") == ("types-pyyaml", "")


# --------------------------------------------------------------------------------------------
# Pins
# --------------------------------------------------------------------------------------------


def test_every_layer_requirement_is_pinned_exactly() -> None:
    # GIVEN / WHEN the layer's requirements
    pins = layer_pins()

    # THEN there are some, and each is an exact == pin (a Lambda layer must be reproducible)
    assert pins
    assert {name: pin for name, pin in pins.items() if not re.fullmatch(r"==[0-9][0-9A-Za-z.+!-]*", pin)} == {}


def test_the_layer_pins_equal_the_same_packages_pins_in_pyproject() -> None:
    # GIVEN both lists
    layer, project = layer_pins(), pyproject_pins()

    # WHEN each layer package is looked up in pyproject.toml
    mismatched = {name: (pin, project.get(name)) for name, pin in layer.items() if project.get(name) != pin}

    # THEN every one is there with the very same pin
    assert mismatched == {}


def test_every_third_party_module_shared_imports_is_in_the_layer_or_the_runtime() -> None:
    # GIVEN the top-level modules imported anywhere in shared/
    imported = set().union(*imports_under("shared").values())
    third_party = {m for m in imported if m not in sys.stdlib_module_names and m not in {"shared", "__future__"}}
    assert third_party  # the scan found the layer's packages

    # WHEN each is matched to a layer requirement or the Lambda runtime
    layer = set(layer_pins())
    missing = {
        m for m in third_party if m not in RUNTIME_PROVIDED and normalize(DISTRIBUTION_OF.get(m, m)) not in layer
    }

    # THEN none is missing from the layer
    assert missing == set()
