"""schemathesis against the OpenAPI document: for generated requests (bounded), no answer is
a server error and every answer matches its documented status, content type and schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from shipyard.api.app import create_app
from tests.api_fixtures import auth, tokens
from tests.conftest import commit_all, copy_shop, git


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The demo copy, never deployed (no agent runs): plans, graphs, empty history."""
    project = copy_shop(tmp_path_factory.mktemp("schema") / "shop")
    git(project, "init", "-q")
    commit_all(project, "v1")
    yield project


@pytest.fixture(scope="module")
def api_schema(project: Path) -> Any:
    app = create_app(project, tokens=tokens(), recover_interval=None, allowed_hosts=("testserver",))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_answers_match_the_openapi_document(api_schema: Any) -> None:
    # schemathesis' own pytest plugin does not run under pytest 9 yet: each operation's
    # strategy is driven by hypothesis here instead (the same cases and checks).
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            # A read token: every operation answers, and none of them deploys anything.
            case.call_and_validate(headers=auth("read"), checks=CHECKS)

        check()


def test_the_document_names_every_route(api_schema: Any) -> None:
    paths = set(api_schema.raw_schema["paths"])
    assert {
        "/api/v1/environments",
        "/api/v1/deployments",
        "/api/v1/deployments/{deployment_id}/stream",
        "/api/v1/rollbacks",
        "/api/v1/graph",
    } <= paths
    errors = api_schema.raw_schema["paths"]["/api/v1/deployments"]["post"]["responses"]["428"]
    assert list(errors["content"]) == ["application/problem+json"]
