"""What `sam build` puts in the Lambda packages: the functions and the shared layer hold none of
the console's or the local stack's code, and the worker's unzipped package stays well under
Lambda's 250 MB.

CI's `make lint` runs `sam build` into ``.aws-sam/build`` before the tests; when that build is
missing or older than the sources, the packages are built here the way SAM builds them (the
layer by shared/Makefile's ``build-SharedLayer`` target, each function by copying its
``CodeUri``), so the test always looks at packages made from the code under test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmbatch.local.template import function_spec, load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
SAM_BUILD = ROOT / ".aws-sam" / "build"
FUNCTIONS = ("Worker", "DeadLetter", "Notifier", "LanePoller")
LAYER = "SharedLayer"
#: Lambda's limit on a function and its layers, unzipped.
LAMBDA_UNZIPPED_LIMIT_BYTES = 250 * 1024 * 1024
#: "Well under": half the limit leaves room for the dependencies still to come.
WORKER_BUDGET_BYTES = LAMBDA_UNZIPPED_LIMIT_BYTES // 2
#: Top-level names the console, the CLI, the local stack and the tests would bring.
CONSOLE_SIDE = {"textual", "rich", "tui", "llmbatch", "moto", "tests", "pytest", "llama_cpp"}
#: ELF e_machine of each Lambda architecture.
ELF_MACHINE = {"x86_64": 62, "arm64": 183}


@dataclass(frozen=True)
class Packages:
    functions: dict[str, Path]
    #: The layer's content (Lambda mounts it at /opt: its python/ goes on sys.path).
    layer: Path
    built_by: str


def sources() -> Iterator[Path]:
    yield ROOT / "template.yaml"
    for directory in ("shared", *(function_spec(TEMPLATE, f)["CodeUri"] for f in FUNCTIONS)):
        yield from (p for p in (ROOT / directory).rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def sam_build_is_current() -> bool:
    built = SAM_BUILD / "template.yaml"
    if not built.is_file() or not all((SAM_BUILD / n).is_dir() for n in (*FUNCTIONS, LAYER)):
        return False
    return max(p.stat().st_mtime for p in sources()) <= built.stat().st_mtime


def build_like_sam(out: Path) -> Packages:
    layer_dir = ROOT / TEMPLATE["Resources"][LAYER]["Properties"]["ContentUri"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        ["make", "-C", str(layer_dir), f"build-{LAYER}", f"ARTIFACTS_DIR={out / LAYER}"],
        check=True,
        env=env,
        capture_output=True,
        timeout=600,
    )
    functions = {}
    for name in FUNCTIONS:
        functions[name] = out / name
        shutil.copytree(
            ROOT / function_spec(TEMPLATE, name)["CodeUri"],
            functions[name],
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    return Packages(functions, out / LAYER, "shared/Makefile and a copy of each CodeUri")


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    if sam_build_is_current():
        return Packages({n: SAM_BUILD / n for n in FUNCTIONS}, SAM_BUILD / LAYER, "sam build")
    return build_like_sam(tmp_path_factory.mktemp("build"))


def top_level_names(directory: Path) -> set[str]:
    """Importable top-level names and installed distributions (``rich-14.0.dist-info`` → rich)."""
    names = set()
    for entry in directory.iterdir():
        name = entry.name
        if name.endswith((".dist-info", ".egg-info")):
            name = name.split("-", 1)[0]
        names.add(name.removesuffix(".py").lower())
    return names


def size_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file() and not p.is_symlink())


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    return int.from_bytes(header[18:20], "little")


# --------------------------------------------------------------------------------------------


def test_the_layer_holds_the_shared_package_and_its_requirements(packages: Packages) -> None:
    # GIVEN / WHEN the layer's python/ directory
    python = packages.layer / "python"

    # THEN it has the shared package (not its contents at the top) and the core libraries
    assert (python / "shared" / "worker" / "processor.py").is_file(), packages.built_by
    assert {"aws_lambda_powertools", "aiobotocore", "aiohttp", "pydantic", "aws_xray_sdk"} <= top_level_names(python)
    assert not (python / "shared" / "Makefile").exists()


@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_package_holds_the_console_the_local_stack_or_the_tests(packages: Packages, function: str) -> None:
    # GIVEN the function's package and the layer it runs with
    function_names = top_level_names(packages.functions[function])
    layer_names = top_level_names(packages.layer / "python")
    assert "app" in function_names  # the scan sees the handler itself

    # WHEN / THEN neither holds a console-side package at its top level
    assert function_names & CONSOLE_SIDE == set(), packages.built_by
    assert layer_names & CONSOLE_SIDE == set(), packages.built_by
    # nor anywhere below (a vendored copy would load just the same)
    nested = [p for p in (packages.layer / "python").rglob("*") if p.is_dir() and p.name in {"textual", "tui"}]
    assert nested == []


def test_the_worker_unzipped_stays_well_under_lambdas_limit(packages: Packages, capsys: Any) -> None:
    # GIVEN the worker's own package and its layer, unzipped as Lambda would
    total = size_bytes(packages.functions["Worker"]) + size_bytes(packages.layer)
    with capsys.disabled():
        print(f"\nworker + layer unzipped: {total / 2**20:.1f} MB ({packages.built_by})")

    # WHEN / THEN they take at most half of the 250 MB
    assert 0 < total <= WORKER_BUDGET_BYTES, f"{total / 2**20:.1f} MB"


def test_compiled_extensions_in_the_layer_match_the_functions_architecture(packages: Packages) -> None:
    # GIVEN the functions' architecture and every compiled extension in the layer
    (architecture,) = TEMPLATE["Globals"]["Function"]["Architectures"]
    extensions = list((packages.layer / "python").rglob("*.so"))
    assert extensions  # pydantic-core, aiohttp, ... are compiled

    # WHEN / THEN each is built for that architecture (else Lambda cannot import it)
    wrong = [str(p.relative_to(packages.layer)) for p in extensions if elf_machine(p) != ELF_MACHINE[architecture]]
    assert wrong == []
