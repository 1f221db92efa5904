"""What a user installs: the extras, with the pip a fresh venv brings, and the import's weight."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match is not None, requirement
    return match.group(0).lower().replace("_", "-")


def test_no_extra_names_the_package_itself() -> None:
    """Every extra lists its packages: none says otel-resilience[...] (pip 23.2 trips on it)."""
    own = _name(PYPROJECT["project"]["name"])
    assert {extra: [r for r in reqs if _name(r) == own] for extra, reqs in EXTRAS.items()} == {
        extra: [] for extra in EXTRAS
    }


@pytest.mark.parametrize("extra", ["demo", "test"])
def test_demo_and_test_carry_every_instrumentation_and_the_cli(extra: str) -> None:
    """demo and test repeat instrumentation and cli (no self-reference), so none may be missing."""
    wanted = set(EXTRAS["instrumentation"]) | set(EXTRAS["cli"])
    assert sorted(wanted - set(EXTRAS[extra])) == []


def test_exporters_carry_no_specifier_and_instrumentations_a_floor() -> None:
    """The pyproject's resolver rules: see the comment above [project.optional-dependencies]."""
    for extra, requirements in EXTRAS.items():
        for requirement in requirements:
            name = _name(requirement)
            if name.startswith("opentelemetry-exporter-"):
                assert requirement == name, f"{extra}: {requirement}: exporters take no specifier"
            if name.startswith("opentelemetry-instrumentation-"):
                assert ">=" in requirement, f"{extra}: {requirement}: instrumentations need a floor"


def _project_copy(target: Path) -> Path:
    """The files a build needs, outside the checkout (a build writes egg-info next to them)."""
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    shutil.copytree(
        ROOT / "otel_resilience",
        target / "otel_resilience",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return target


def test_every_extra_resolves_with_the_pip_a_fresh_venv_brings(tmp_path: Path) -> None:
    """``python3 -m venv`` then ``pip install '.[extra]'`` works for every extra, with that pip.

    The venv's own pip (23.2 on Python 3.11) resolves each extra (``--dry-run``: it downloads
    and resolves but installs nothing), against the package index pip is configured with.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = venv / "bin" / "pip"
    version = subprocess.run(
        [str(pip), "--version"], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    project = _project_copy(tmp_path / "project")

    def resolve(extra: str) -> tuple[str, int, str]:
        result = subprocess.run(
            [str(pip), "install", "--dry-run", "--quiet", f".[{extra}]"],
            cwd=project,
            check=False,
            capture_output=True,
            text=True,
            timeout=600,
        )
        errors = [line for line in result.stderr.splitlines() if "Location" not in line]
        return extra, result.returncode, "\n".join(errors[-25:])

    # The extras with exporters and instrumentations each on their own (where pip 23.2 could
    # dead-end); the one-client extras (a client and its instrumentation) together.
    alone = ["cli", "instrumentation", "demo", "test"]
    groups = [*alone, ",".join(sorted(set(EXTRAS) - set(alone)))]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(resolve, groups))
    failed = {extra: log for extra, code, log in outcomes if code != 0}
    assert failed == {}, f"with {version}"


def test_importing_the_library_loads_no_demo_and_no_rich() -> None:
    """``import otel_resilience`` pulls in neither the demo package nor rich (a ``cli`` extra)."""
    code = (
        "import sys, otel_resilience\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rich', 'otel_resilience_demo', 'starlette', 'uvicorn')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_user_docs_are_self_contained() -> None:
    """README.md and docs/ cite no file outside the repository, and their links resolve."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    outside = []
    broken = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        if "DESIGN.md" in text or "../shared" in text:
            outside.append(page.name)
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.name}: {target}")
    assert outside == []
    assert broken == []


def test_public_docstrings_cite_no_file_outside_the_repository() -> None:
    """What ``help()`` shows for the public names mentions no design file users do not have."""
    import inspect

    import otel_resilience

    citing = []
    for name in otel_resilience.__all__:
        obj = getattr(otel_resilience, name)
        docs = [(name, inspect.getdoc(obj) or "")]
        if inspect.isclass(obj):
            docs += [
                (f"{name}.{attr}", inspect.getdoc(member) or "")
                for attr, member in vars(obj).items()
                if not attr.startswith("_") or attr == "__init__"
            ]
        citing += [where for where, doc in docs if "DESIGN" in doc]
    assert (otel_resilience.__doc__ or "").count("DESIGN") == 0
    assert citing == []


_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "__pycache__",
    "*.pyc",
    "*_cache",
    ".hypothesis",
    "*.egg-info",
    "build",
    "dist",
    "test-artifacts",
    ".coverage*",
)


def test_build_makes_a_library_only_wheel_whose_metadata_passes_twine(tmp_path: Path) -> None:
    """``python -m build`` on the checkout: an sdist and a wheel; the wheel holds the
    ``otel_resilience`` package and nothing else (no demo, tests, benchmarks or examples),
    and ``twine check --strict`` passes both."""
    import tarfile
    import zipfile

    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(source)],
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1
    assert len(sdists) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert {name.split("/")[0] for name in names} == {
        "otel_resilience",
        f"otel_resilience-{PYPROJECT['project']['version']}.dist-info",
    }
    assert "otel_resilience/py.typed" in names
    with tarfile.open(sdists[0]) as sdist:
        assert any(name.endswith("/otel_resilience/__init__.py") for name in sdist.getnames())
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, [*wheels, *sdists])],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _floor(requirement: str) -> str:
    return requirement.split(">=")[1].split(",", maxsplit=1)[0].split(";", maxsplit=1)[0].strip()


def test_ci_tests_the_lowest_versions_pyproject_allows() -> None:
    """.ci/lowest-otel.txt pins exactly the OpenTelemetry floors pyproject.toml declares, in
    the dependencies and in every extra (each client's instrumentation too), so the second
    venv of .ci/run tests what the package allows."""
    pins = {}
    for line in (ROOT / ".ci" / "lowest-otel.txt").read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    requirements = [*PYPROJECT["project"]["dependencies"], *(r for e in EXTRAS.values() for r in e)]
    floors = {
        _name(r): _floor(r)
        for r in requirements
        if _name(r).startswith("opentelemetry-") and ">=" in r
    }
    from packaging.version import Version

    assert {n: Version(v) for n, v in floors.items()} == {n: Version(pins[n]) for n in floors}
    assert "opentelemetry-sdk" in floors
    assert PYPROJECT["project"]["requires-python"] == ">=3.10"
