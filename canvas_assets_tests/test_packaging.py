"""What ships: the production wheel, and the image built from it, hold the product and nothing of
the local tools (the Canvas sandbox, the dev stack) or the tests."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]


def _dockerignore_rules() -> list[tuple[bool, str]]:
    """(excludes, pattern) per line of .dockerignore, in order: the last match decides."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((not negated, line.lstrip("!").rstrip("/")))
    return rules


def _matches(pattern: str, path: PurePosixPath) -> bool:
    """Docker's rule: a pattern matches the path or one of its leading folders; ``**/`` matches
    at any depth."""
    any_depth = pattern.startswith("**/")
    pattern = pattern.removeprefix("**/")
    for n in range(1, len(path.parts) + 1):
        prefix = path.parts[:n]
        starts = range(len(prefix)) if any_depth else range(1)
        if any(fnmatch.fnmatchcase("/".join(prefix[i:]), pattern) for i in starts):
            return True
    return False


def _image_build_context(destination: Path) -> Path:
    """The files `docker build .` sends: the checkout's files that .dockerignore admits."""
    rules = _dockerignore_rules()
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        path = PurePosixPath(name)
        excluded = False
        for excludes, pattern in rules:
            if _matches(pattern, path):
                excluded = excludes
        if not excluded and (ROOT / name).is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
    return destination


def test_the_image_and_the_wheel_hold_the_product_without_the_local_tools(tmp_path) -> None:
    """Without this, the production image (and any `pip install .`) could again ship the
    Canvas sandbox, the dev stack or the tests, or miss what the code location needs at run
    time (the migrations)."""
    context = _image_build_context(tmp_path / "context")
    assert (context / "canvas_assets" / "definitions.py").is_file()
    assert not (context / "local").exists() and not (context / "canvas_assets_tests").exists()
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
         str(context)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("canvas_assets-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if not name.startswith("canvas_assets-")}
    assert packages == {"canvas_assets"}, packages
    assert "canvas_assets/definitions.py" in names
    assert any(n.startswith("canvas_assets/warehouse/migrations/") for n in names)
    assert not [n for n in names if "sandbox" in n or "devstack" in n], "local tools shipped"
