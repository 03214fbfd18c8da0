"""The Prefect UI as a user meets it, in a real browser: Debian's Chromium, headless, driven by Playwright.

Against ``prefect server start`` with every deployment of prefect.yaml applied. With
``LEPTON_UI_SCREENSHOTS=DIR`` (``make screenshots``) the pages the README shows are saved there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from flows.build import build
from flows.config import BuildConfig
from tests.conftest import as_javascript_sends, folder_build, write_class_images
from tests.integration.conftest import PROJECT, PrefectServer

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("LEPTON_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# No sandbox: CI runs as root in a container. The rest keeps the browser off the network it cannot reach.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}
SHOWN_WHOLE = """cell => {
    const box = cell.getBoundingClientRect(), frame = cell.closest("table").parentElement.getBoundingClientRect();
    return box.right <= Math.min(frame.right, window.innerWidth) + 0.5;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no browser at {CHROMIUM}: `make test` installs Debian's chromium (infra/install-chromium.sh)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh page; on failure its screenshot goes to test-results/screenshots/."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        folder = PROJECT / "test-results" / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{request.node.name}.png"), full_page=True)
    context.close()


def keep_for_readme(page: Page, name: str) -> None:
    """With LEPTON_UI_SCREENSHOTS set (``make screenshots``), save what the page shows for the README."""
    folder = os.environ.get("LEPTON_UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def ui_url(server: PrefectServer) -> str:
    return server.api_url.removesuffix("/api")


def test_the_custom_run_form_with_defaults_starts_the_default_build(
    prefect_server: PrefectServer, deployed: dict[str, dict], page: Page
) -> None:
    page.goto(f"{ui_url(prefect_server)}/deployments/deployment/{deployed['build']['id']}/run")
    # The form renders the config with descriptions written for users.
    expect(page.get_by_text("Max Batches Per Epoch", exact=False).first).to_be_visible()
    expect(page.get_by_text("Train on at most this many batches per epoch", exact=False)).to_be_visible()
    # An empty optional value is one plain input, not a type toggle stuck on None.
    expect(page.get_by_text('Property is type "None"')).to_have_count(0)
    keep_for_readme(page, "build-form")
    with page.expect_response(
        lambda r: r.url.endswith("/create_flow_run") and r.request.method == "POST"
    ) as created:
        page.get_by_role("button", name="Submit").click()
    assert created.value.status == 201, created.value.text()
    run_id = created.value.json()["id"]
    try:
        sent = httpx.get(f"{prefect_server.api_url}/flow_runs/{run_id}").json()["parameters"]["config"]
        # The form sends every field with its default, as JSON writes them (4.0 as 4)...
        assert json.dumps(sent, sort_keys=True) == json.dumps(
            as_javascript_sends(BuildConfig().model_dump(mode="json")), sort_keys=True
        )
        # ...and the flow reads them back as the defaults, compared as JSON: 1 and 1.0 are equal in Python but
        # not to Lightning (the old limit that trained one batch per epoch).
        received = build.validate_parameters({"config": sent})["config"]
        assert json.dumps(received.model_dump(mode="json"), sort_keys=True) == json.dumps(
            BuildConfig().model_dump(mode="json"), sort_keys=True
        )
    finally:
        # No worker of a later test may pick up a full demo build.
        httpx.delete(f"{prefect_server.api_url}/flow_runs/{run_id}")


def test_the_deployment_list_says_when_each_flow_runs(prefect_server: PrefectServer, deployed, page: Page) -> None:
    page.goto(f"{ui_url(prefect_server)}/deployments")
    for name, when in {"score": "Hourly", "monitor": "Hourly", "explain": "Every 7 days"}.items():
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))
        expect(row.first).to_contain_text(when)
        expect(row.first).not_to_contain_text("+1")


def _build(server: PrefectServer, root: Path, classes: dict[str, int]) -> dict:
    """Run a small build flow against the server, as a separate process; return its flow run."""
    images = write_class_images(root / "images", classes, seed=7)
    config = folder_build(root, images, "ui-model", compress={"int8": {"calibration_size": 20}},
                          evaluate={"policy": {"accuracy_budget_pp": 50}})
    # One registry for both builds: the second gates against the first.
    config = config.model_copy(update={"store": config.store.model_copy(update={"uri": f"file://{root.parent}/registry"})})
    path = root / "config.json"
    path.write_text(config.model_dump_json())
    done = subprocess.run([sys.executable, "-m", "flows.build", "--config", str(path)], cwd=PROJECT,
                          env=server.env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = httpx.post(f"{server.api_url}/flow_runs/filter", json={"sort": "START_TIME_DESC"}).json()
    return next(r for r in runs if r["parameters"].get("config", {}).get("data", {}).get("source") == str(images))


def _artifact(server: PrefectServer, run: dict, key: str) -> dict:
    found = httpx.post(f"{server.api_url}/artifacts/filter", json={
        "artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [run["id"]]}}
    }).json()
    assert len(found) == 1, f"{key} artifacts of run {run['name']}: {found}"
    return found[0]


def test_a_refused_promotion_and_the_served_variant_are_plain_to_see(
    prefect_server: PrefectServer, page: Page, tmp_path: Path
) -> None:
    first = _build(prefect_server, tmp_path / "first", {"dark": 40, "light": 40})
    # Trained on other classes, the second is not comparable with production: the gate keeps production.
    second = _build(prefect_server, tmp_path / "second", {"dark": 40, "light": 40, "mid": 40})
    ui = ui_url(prefect_server)
    assert "promoted" in first["tags"] and second["state_name"] == "Kept production"

    # The run list: the refused build is named for what happened and tagged, next to the promoted one.
    page.goto(f"{ui}/runs")
    row = page.locator(".flow-run-list-item").filter(has_text=second["name"]).first
    expect(row).to_contain_text("Kept production")
    expect(row).to_contain_text("kept-production")
    keep_for_readme(page, "runs")

    # The run page states the reason.
    page.goto(f"{ui}/runs/flow-run/{second['id']}")
    expect(page.get_by_text("Kept production").first).to_be_visible()

    # The variant table: the served variant marked, the deciding columns inside the window.
    table = _artifact(prefect_server, first, "variant-table")
    served = next(row["variant"] for row in json.loads(table["data"]) if row["served"])
    page.goto(f"{ui}/artifacts/artifact/{table['id']}")
    expect(page.get_by_text(f"Served: {served}.", exact=False)).to_be_visible()
    served_row = page.get_by_role("row").filter(has_text=served).first
    expect(served_row).to_contain_text("true")
    for header in ("served", "accuracy", "in_budget", "p50_ms_b1"):
        cell = page.get_by_role("columnheader", name=header, exact=True)
        # Inside both the window and the table's own frame, which clips what does not fit.
        assert cell.evaluate(SHOWN_WHOLE), f"{header} is cut off"
    keep_for_readme(page, "variant-table")

    # The release opens from the run: a link artifact to the model card.
    release = _artifact(prefect_server, first, "release")
    page.goto(f"{ui}/artifacts/artifact/{release['id']}")
    link = page.get_by_role("link", name="ui-model", exact=False).filter(has_text="model card").first
    href = link.get_attribute("href")
    assert href is not None and href.startswith("file://") and href.endswith("MODEL_CARD.md")
    assert Path(href.removeprefix("file://")).read_text().startswith("#")
