"""The dashboard in a real browser (Debian's chromium, driven by Playwright): log in, start a
deploy of the demo from the overview, confirm its plan, watch the live view reach
"succeeded", then promote it to staging the same way. Screenshots are kept in
test-artifacts/dashboard/."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api_fixtures import TOKENS, serve
from tests.conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "dashboard"

pytestmark = pytest.mark.slow


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `apt-get install -y chromium` (make test does it)")
    with sync_api.sync_playwright() as playwright:
        try:
            # --no-sandbox: tests run as root in a container, where chromium's sandbox cannot.
            launched = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox"]
            )
        except sync_api.Error as exc:
            pytest.skip(f"chromium cannot run here: {str(exc).splitlines()[0]}")
        yield launched
        launched.close()


def test_deploy_from_the_dashboard_and_watch_it_live(shop: Path, browser: Any) -> None:
    with contextlib.contextmanager(serve)(shop) as server:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))

        page.goto(server.url + "/")
        assert page.url.endswith("/login?next=/")
        page.fill("input[name=token]", TOKENS["deploy"])
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_selector("section.env[data-environment=local]")

        page.click("button[data-action=deploy][data-environment=local]")
        expect = pytest.importorskip("playwright.sync_api").expect
        plan = page.locator("#confirm-plan")
        # (Playwright's string predicates are eval, which the page's CSP forbids: locators.)
        expect(plan).to_contain_text("plan hash:")
        assert "components: backend, admin, marketing" in plan.inner_text()
        page.click("#confirm-yes")

        page.wait_for_url("**/deployments/*")
        deployment_id = page.url.rsplit("/", 1)[1]
        assert page.locator("svg.graph g.node").count() == 3
        expect(page.locator("#status")).to_have_text("succeeded", timeout=120_000)
        # The live view got there through the stream: every journal event is a row, and each
        # component shows the last step it went through.
        journal = server.client().get(f"/api/v1/deployments/{deployment_id}/events").json()
        expect(page.locator("#journal tbody tr")).to_have_count(len(journal))
        for name in ("backend", "admin", "marketing"):
            node = page.locator(f"svg.graph g.node[data-component={name}]")
            assert node.locator("text.step").text_content() == "verify ok"
        page.click("#full-record a")
        page.wait_for_selector("svg.timeline")  # the finished page: timeline, health, journal
        assert page.inner_text("#status") == "succeeded"

        if ARTIFACTS.exists():
            shutil.rmtree(ARTIFACTS)
        ARTIFACTS.mkdir(parents=True)
        page.screenshot(path=str(ARTIFACTS / f"deployment-{deployment_id}.png"), full_page=True)
        page.goto(server.url + "/")
        assert page.locator("td.ok").count() == 3  # every component of local is healthy
        page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

        # Promote what local runs to staging: the promotion's plan, confirmed, then live.
        page.click("button[data-action=promote][data-environment=staging][data-source=local]")
        expect(plan).to_contain_text(f"promote deployment {deployment_id} of local")
        page.click("#confirm-yes")
        page.wait_for_url(lambda url: deployment_id not in url and "/deployments/" in url)
        expect(page.locator("#status")).to_have_text("succeeded", timeout=120_000)
        page.goto(server.url + "/")
        assert page.locator("section[data-environment=staging] td.ok").count() == 3
        assert problems == []  # no script error, no Content-Security-Policy violation
