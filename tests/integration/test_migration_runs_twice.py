"""A deploy's migrate step starts the release's Python as few times as the answer needs.

The step reads the state (journaled, checked for destructive and irreversible steps), then
migrates with that state (`known`, not read again), and the tool reads the state after the
upgrade (did it reach the head?). A `python` on the release env's PATH that logs each run
before it runs the real interpreter counts the processes.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from shipyard.config import Migrations
from shipyard.targets.local import LocalTarget

PROJECTS = Path(__file__).parent.parent / "migration_projects"


def _counting_path(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A release env whose `python` logs a line per run, then is this venv's interpreter."""
    bin_dir, log = tmp_path / "bin", tmp_path / "runs.log"
    bin_dir.mkdir()
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\necho run >> {log}\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    path = os.pathsep.join([str(bin_dir), os.environ.get("PATH", os.defpath)])
    return {"DATABASE_URL": "sqlite:///shared/app.db", "PATH": path}, log


def _release(tmp_path: Path, tool: str) -> tuple[LocalTarget, Migrations]:
    release = tmp_path / "root" / "api" / "releases" / "r1"
    release.mkdir(parents=True)
    (release / "shared").mkdir()
    if tool == "alembic":
        shutil.copy(PROJECTS / "alembic" / "alembic.ini", release)
        shutil.copytree(PROJECTS / "alembic" / "migrations", release / "migrations")
        (release / "migrations" / "versions").mkdir(exist_ok=True)
        for name in ("a1_products", "a2_price"):
            shutil.copy(
                release / "migrations" / "pool" / f"{name}.py", release / "migrations/versions"
            )
        spec = Migrations(tool="alembic", config="alembic.ini")
    else:
        shutil.copytree(PROJECTS / "django", release, dirs_exist_ok=True)
        folder = release / "shop" / "migrations"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        (folder / "__init__.py").touch()
        for name in ("0001_initial", "0002_product_price"):
            shutil.copy(release / "shop" / "migrations_pool" / f"{name}.py", folder)
        spec = Migrations(tool="django")
    return LocalTarget(tmp_path / "root"), spec


@pytest.mark.parametrize(
    ("tool", "head", "runs"),
    [
        # state; upgrade + the state it left, in one helper run
        ("alembic", "a2", 2),
        # state; `manage.py migrate`; the state it left
        ("django", "shop.0002_product_price", 3),
    ],
)
def test_the_migrate_step_reads_the_pending_steps_once(
    tmp_path: Path, tool: str, head: str, runs: int
) -> None:
    target, spec = _release(tmp_path, tool)
    env, log = _counting_path(tmp_path)
    state = target.migration_state("api", "r1", spec, env)  # journaled and checked
    assert [s.revision for s in state.pending][-1] == head
    assert target.migrate("api", "r1", spec, env, None, state) == (None, head)
    assert len(log.read_text().splitlines()) == runs
    # Without the state in hand (a rollback's migrate), the tool reads it itself.
    log.unlink()
    assert target.migrate("api", "r1", spec, env, None) == (head, head)
    assert len(log.read_text().splitlines()) == runs
