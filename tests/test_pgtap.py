"""Runs every pgTAP file in tests/pgtap/ against a fresh copy of the installed
schema, the way pg_prove does (psql, TAP on stdout), one pytest test per file."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PGTAP_TOTALS, Database, run_pgtap_file

PGTAP_DIR = Path(__file__).resolve().parent / "pgtap"
FILES = sorted(PGTAP_DIR.glob("*.sql"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_pgtap(db: Database, path: Path) -> None:
    result = run_pgtap_file(db, path)
    PGTAP_TOTALS["files"] += 1
    PGTAP_TOTALS["assertions"] += result.ran
    PGTAP_TOTALS["failed"] += len(result.failed)
    if result.failed:
        details = "\n".join(result.failed + result.diagnostics[-40:])
        pytest.fail(
            f"{path.name}: {len(result.failed)} of {result.ran} failed\n{details}", pytrace=False
        )
