"""The benchmark command runs end to end at its smoke size (CI asserts nothing about speed)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every benchmark at its smoke size

ROOT = Path(__file__).resolve().parents[1]


def _errors(node: object, where: str = "") -> list[str]:
    """Every measurement the benchmark recorded as not measured, with where and why."""
    if isinstance(node, dict):
        found = [f"{where}: {node['error']}"] if "error" in node else []
        for key, value in node.items():
            found += _errors(value, f"{where}/{key}")
        return found
    if isinstance(node, list):
        return [e for i, item in enumerate(node) for e in _errors(item, f"{where}[{i}]")]
    return []


def test_the_benchmark_runs_every_measurement_at_its_smoke_size(tmp_path) -> None:
    """Without this, a change could break the benchmark command (which only runs for hours on
    a quiet machine) and BENCHMARKS.md could no longer be regenerated."""
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert not _errors(figures), _errors(figures)
    backfill = figures["backfill"][0]
    assert backfill["first"]["requests"] >= backfill["fewest_requests"] > 0, backfill
    assert figures["live_events"]["apply"]["instant"]["events"] > 0


def test_the_paired_benchmark_runs_every_variant_at_the_small_size() -> None:
    """Without this, the side-by-side benchmark of the limiter's reserve and of the writes during
    the fetch (what BENCHMARKS.md credits them with) could break unseen."""
    variants = ["now", "people after the fetch", "upsert after the fetch", "reserve 150"]
    result = subprocess.run(
        [sys.executable, "-m", "bench.paired", "--sizes", "small:1", "--repeat", "1",
         "--variants", ",".join(variants)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("small: ")]
    assert [line.split(":")[1].strip() for line in lines] == variants
    assert all("throttled 0" in line for line in lines), lines


def test_the_launch_benchmark_runs_each_checkout_through_dagster(tmp_path) -> None:
    """Without this, the side-by-side benchmark of a run's launch (what BENCHMARKS.md credits
    the code location's loading with) could break unseen, or time this checkout's code in
    place of the other checkout it was given."""
    other = tmp_path / "other"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "canvas_assets", other / "canvas_assets", ignore=ignore)
    result = subprocess.run(
        [sys.executable, "-m", "bench.launch", "--repeat", "1", str(other), str(ROOT)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for checkout in (other, ROOT):
        line = next(line for line in lines if line.startswith(f"{checkout}: "))
        assert "throttled 0" in line, line
