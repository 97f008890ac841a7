"""`pip install` of the wheel into a fresh venv, outside the source tree,
gives a working stacker-queue whose SQL comes from the wheel."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from typing import Any

import pytest

from stacker_queue.templates import Renderer

ROOT = Path(__file__).resolve().parents[1]


def sh(*args: str | Path, cwd: Path, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.pop("DATABASE_URL", None)
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    sh(sys.executable, "-m", "build", "--wheel", "--outdir", out, ROOT, cwd=out)
    (built,) = out.glob("stacker_queue-*.whl")
    return built


def test_wheel_carries_the_sql_and_py_typed(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "stacker_queue/py.typed" in names
    for folder in ("migrations", "functions", "sql"):
        sources = {p.name for p in (ROOT / folder).glob("*.sql")}
        packed = {Path(n).name for n in names if n.startswith(f"stacker_queue/_sql/{folder}/")}
        assert sources and sources <= packed, folder


@pytest.mark.slow
def test_installed_wheel_runs_the_demo(wheel: Path, tmp_path: Path, db: Any) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    sh(bin_dir / "python", "-m", "pip", "install", "-q", wheel, cwd=tmp_path)

    where = sh(
        bin_dir / "python",
        "-c",
        "import stacker_queue.templates as t; print(t.sql_root())",
        cwd=tmp_path,
    ).strip()
    assert where.startswith(str(env_dir)) and where.endswith("_sql"), where
    assert not where.startswith(str(ROOT / "migrations"))

    rendered = sh(bin_dir / "stacker-queue", "render", cwd=tmp_path)
    assert rendered == Renderer().full_install()

    out = sh(bin_dir / "stacker-queue", "demo", "--dsn", db.conninfo, cwd=tmp_path)
    assert "agent woken" in out and "Wake-up time" in out and "Dropped the scratch schema" in out
