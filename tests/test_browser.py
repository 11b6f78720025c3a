"""A real browser on the running app: upload, inspect, ask, see the heatmap and the answer.

Needs Debian's `chromium` (`.ci/run` installs it) and the `playwright` Python package;
skipped where either is missing. The screenshot lands in the test's temporary folder,
or in $ANOMALY_VLM_SCREENSHOTS when set.
"""

import os
import shutil
from pathlib import Path

import pytest

from anomaly_vlm.ui import AppConfig, launch

from .test_app import _free_port, app_inspector

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")


def test_browser_uploads_inspects_and_chats(dataset_root, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    category = dataset_root / "widget"
    image = sorted((category / "test" / "stain").glob("*.png"))[2]
    references = [str(p) for p in sorted((category / "train" / "good").glob("*.png"))]
    config = AppConfig(port=_free_port())
    demo = launch(app_inspector(), config, block=False)
    shots = Path(os.environ.get("ANOMALY_VLM_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(f"http://127.0.0.1:{config.port}/", wait_until="domcontentloaded")   # the app keeps a
            page.locator("#inspect").wait_for(timeout=60_000)                                # stream open
            page.locator("#upload input[type=file]").set_input_files(str(image))
            page.locator("#references input[type=file]").set_input_files(references)
            page.wait_for_timeout(1000)
            page.locator("#inspect").click()
            page.locator("#heatmap img").wait_for(timeout=60_000)
            page.locator("#verdict").get_by_text("Anomaly score").wait_for(timeout=30_000)
            page.locator("#question textarea").fill("Is anything wrong, and where?")
            page.locator("#ask").click()
            answer = page.locator("#chat").get_by_text("defect at the").or_(
                page.locator("#chat").get_by_text("No anomaly found"))
            answer.first.wait_for(timeout=60_000)
            page.screenshot(path=str(shots / "app.png"), full_page=True)
            heatmap_width = page.locator("#heatmap img").evaluate("img => img.naturalWidth")
            browser.close()
    finally:
        demo.close()
    assert heatmap_width == 64
    assert (shots / "app.png").stat().st_size > 10_000
