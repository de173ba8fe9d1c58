"""The plan of a promotion: the source's artifacts released in dependency order, no build."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipyard.config import Config, parse_config
from shipyard.core.plan import plan_deploy, plan_promote
from shipyard.errors import UsageError
from tests.unit.test_plan import CONFIG


@pytest.fixture
def config(tmp_path: Path) -> Config:
    for name in ("backend", "admin", "marketing", "docs"):
        (tmp_path / name).mkdir()
    return parse_config(CONFIG, file=tmp_path / "shipyard.toml", root=tmp_path)


ARTIFACTS = {"backend": "b" * 64, "admin": "a" * 64, "marketing": "m" * 64}


def test_a_promotion_releases_artifacts_without_building(config: Config) -> None:
    plan = plan_promote(
        config,
        "local",
        commit="c" * 40,
        artifacts=ARTIFACTS,
        promoted_from="01-source",
        source_environment="staging",
        current_commit=None,
    )
    assert plan.kind == "promote"
    assert plan.levels == (("backend",), ("admin", "marketing"))
    assert not [s for s in plan.steps if s.kind == "build"]
    assert plan.step("release:admin").after == ("snapshot",)
    assert plan.step("activate:admin").after == ("release:admin", "activate:backend")
    assert plan.step("migrate:backend").after == ("release:backend",)
    assert plan.to_dict()["artifacts"] == ARTIFACTS
    assert plan.to_dict()["promoted_from"] == "01-source"
    other = plan_promote(
        config,
        "local",
        commit="c" * 40,
        artifacts={**ARTIFACTS, "admin": "z" * 64},
        promoted_from="01-source",
        source_environment="staging",
        current_commit=None,
    )
    assert other.plan_hash != plan.plan_hash  # the digests are part of what was reviewed


def test_a_deploy_plan_hash_does_not_change_with_promotion_fields(config: Config) -> None:
    plan = plan_deploy(
        config, "local", commit="c" * 40, base_commit=None, changes=None, selection=None
    )
    assert "artifacts" not in plan.to_dict_without_hash()


def test_an_unknown_component_cannot_be_promoted(config: Config) -> None:
    with pytest.raises(UsageError, match="unknown component"):
        plan_promote(
            config,
            "local",
            commit="c" * 40,
            artifacts={"gone": "g" * 64},
            promoted_from="01-source",
            source_environment="staging",
            current_commit=None,
        )
