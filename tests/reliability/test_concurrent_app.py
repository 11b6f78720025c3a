"""Twenty users at once on the running app: every request answered, nothing shared between them."""

import gc
import resource
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomaly_vlm.ui import AppConfig, launch

from ..test_app import _free_port, app_inspector

SESSIONS = 20


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """One part per session, each with a bright square at its own place, and shared known-good references."""
    folder = tmp_path_factory.mktemp("parts")
    rng = np.random.default_rng(3)
    base = rng.normal(120, 6, (64, 64, 3))
    references = []
    for i in range(4):
        path = folder / f"good_{i}.png"
        Image.fromarray(np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)).save(path)
        references.append(str(path))
    images = []
    for i in range(SESSIONS):
        image = np.clip(base + rng.normal(0, 4, base.shape), 0, 255)
        y, x = divmod(i % 9, 3)
        image[4 + 20 * y: 16 + 20 * y, 4 + 20 * x: 16 + 20 * x] = 255
        path = folder / f"part_{i:02d}.png"
        Image.fromarray(image.astype(np.uint8)).save(path)
        images.append(str(path))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return images, references, str(folder / "broken.png")


def test_twenty_sessions_at_once_each_get_their_own_answers(parts, tmp_path):
    from gradio_client import Client, handle_file

    images, references, broken = parts
    config = AppConfig(port=_free_port(), concurrency=4)
    demo = launch(app_inspector(), config, block=False)
    url = f"http://127.0.0.1:{config.port}/"

    def session(i: int) -> dict:
        client = Client(url, verbose=False, download_files=str(tmp_path / f"s{i}"))
        if i == 0:   # one user uploads a broken file; the others' queued requests must not notice
            with pytest.raises(Exception, match="broken.png"):
                client.predict(handle_file(broken), [], "", 0.3, api_name="/inspect")
        _, findings, verdict, _ = client.predict(handle_file(images[i]), [handle_file(r) for r in references],
                                                 "part", 0.3, api_name="/inspect")
        history = client.predict(f"Where is the defect on part {i}?", api_name="/ask")
        reports = client.predict(api_name="/report")
        html = Path(reports[0] if isinstance(reports[0], str) else reports[0]["path"]).read_text()
        return {"findings": findings["data"], "history": history, "html": html}

    try:
        baseline = _rss_mb()
        session(SESSIONS - 1)                    # warm-up: fits the shared reference scorer once
        warm = _rss_mb()
        with ThreadPoolExecutor(SESSIONS) as pool:
            results = list(pool.map(session, range(SESSIONS)))
    finally:
        demo.close()
    for i, result in enumerate(results):
        assert result["findings"], f"session {i} got no regions"
        location = result["findings"][0][1]
        questions = [m for m in result["history"] if m["role"] == "user"]
        assert len(questions) == 1 and f"part {i}?" in str(questions[0]["content"])
        assert location in str(result["history"][-1]["content"])
        assert f"part_{i:02d}" in result["html"]
        assert not any(f"part_{j:02d}" in result["html"] for j in range(SESSIONS) if j != i)
    gc.collect()
    assert _rss_mb() - warm < 400, (baseline, warm, _rss_mb())


def test_uploads_over_the_size_limit_are_refused(tmp_path):
    from gradio_client import Client, handle_file

    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 900, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 2**20
    config = AppConfig(port=_free_port(), max_upload_mb=1)
    demo = launch(app_inspector(), config, block=False)
    try:
        client = Client(f"http://127.0.0.1:{config.port}/", verbose=False)
        with pytest.raises(Exception, match="(?i)(too large|exceeds|maximum)"):
            client.predict(handle_file(str(big)), [], "", 0.5, api_name="/inspect")
    finally:
        demo.close()
