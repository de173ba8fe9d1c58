"""Fixtures for the state store tests; test modules load them with
`pytest_plugins = ["tests.integration.conftest_store"]`.

Every store test runs against SQLite (a file under tmp_path) and, when
$SHIPYARD_TEST_POSTGRES_URL is set, against PostgreSQL too: each PostgreSQL test
gets a fresh schema (selected with `options=-csearch_path=…` in the URL) that is
dropped afterwards.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shipyard.store import Store

PG_ENV = "SHIPYARD_TEST_POSTGRES_URL"
PG_SKIP_REASON = "SHIPYARD_TEST_POSTGRES_URL not set: PostgreSQL store tests skipped"

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


RacingWorkers = Callable[..., list[Any]]


class FakeClock:
    """An injectable clock that only moves when told to."""

    def __init__(self, start: datetime = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def postgres_base_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(PG_SKIP_REASON)
    return url


def _libpq_url(url: str) -> str:
    """The URL psycopg.connect understands (no SQLAlchemy `+driver`)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+')[0]}{sep}{rest}"


def with_search_path(url: str, schema: str) -> str:
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options=-csearch_path%3D{schema}"


def create_pg_schema() -> tuple[str, str]:
    """A fresh schema: returns (its name, a URL whose search_path is that schema)."""
    import psycopg

    base = postgres_base_url()
    schema = f"shipyard_test_{secrets.token_hex(6)}"
    with psycopg.connect(_libpq_url(base), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, with_search_path(base, schema)


def drop_pg_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(_libpq_url(postgres_base_url()), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty state store: SQLite file (folder not created yet) or PG schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/state/state.db"
        return
    schema, url = create_pg_schema()
    try:
        yield url
    finally:
        drop_pg_schema(schema)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[Store]:
    s = Store.open(store_url, clock=clock)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def racing_workers() -> RacingWorkers:
    """`run_racing_workers`, as a fixture (so test modules need not import this file)."""
    return run_racing_workers


def _worker_main(
    target: Callable[..., object],
    barrier: Any,
    results: Any,
    index: int,
    args: Sequence[object],
) -> None:
    try:
        results.put((index, True, target(barrier, *args)))
    except BaseException:
        results.put((index, False, traceback.format_exc()))


def run_racing_workers(
    target: Callable[..., object], argv: Sequence[Sequence[object]], *, timeout: float = 60
) -> list[Any]:
    """Run `target(barrier, *args)` in one forked process per entry of `argv`.

    Each target prepares (opens its own Store…), calls `barrier.wait()` so that all of
    them start the contended part at the same moment, and returns a picklable result.
    Returns the results in the order of `argv`; a worker's exception fails the test.
    The parent must hold no open database connection when calling this.
    """
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(argv))
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker_main, args=(target, barrier, results, i, args), daemon=True)
        for i, args in enumerate(argv)
    ]
    for p in procs:
        p.start()
    try:
        collected: dict[int, Any] = {}
        failures = []
        for _ in procs:
            index, ok, value = results.get(timeout=timeout)
            if ok:
                collected[index] = value
            else:
                failures.append(f"worker {index} failed:\n{value}")
        assert not failures, "\n".join(failures)
        return [collected[i] for i in range(len(procs))]
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
