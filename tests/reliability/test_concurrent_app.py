"""Twenty users at once on the running app, wave after wave: every request answered, nothing shared, no leak."""

import os
import resource
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomaly_vlm.ui import AppConfig, launch

from ..test_app import _free_port, app_inspector

SESSIONS = 20


ROOT = Path(__file__).resolve().parents[2]
SERVER = """
from anomaly_vlm.ui import AppConfig, launch
from tests.test_app import app_inspector
launch(app_inspector(), AppConfig(port={port}, concurrency=4))
"""


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _serve(port: int) -> subprocess.Popen:
    """The app in its own process, so its memory is measured apart from the twenty clients'."""
    # Two malloc arenas, as for any threaded Python server: with one arena per thread, freed memory stays
    # scattered over many arenas and RSS drifts with scheduling, hiding whether anything is really kept.
    server = subprocess.Popen([sys.executable, "-c", SERVER.format(port=port)], cwd=ROOT,
                              env={**os.environ, "MALLOC_ARENA_MAX": "2"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=1)
            return server
        except OSError:
            if server.poll() is not None:
                raise AssertionError("the app process exited during start-up") from None
            time.sleep(0.25)
    server.kill()
    raise AssertionError("the app did not start in 120 s")


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
    port = _free_port()
    server = _serve(port)
    url = f"http://127.0.0.1:{port}/"

    def session(i: int) -> dict:
        # httpx's 5 s default read timeout measures the 2-core machine's load, not the app: twenty uploads land
        # while the server scores, so a slow CI machine timed an upload out once; answers are what this checks.
        client = Client(url, verbose=False, download_files=str(tmp_path / f"s{i}"), httpx_kwargs={"timeout": 120})
        try:
            if i == 0:   # one user uploads a broken file; the others' queued requests must not notice
                with pytest.raises(Exception, match="broken.png"):
                    client.predict(handle_file(broken), [], "", 0.3, False, api_name="/inspect")
            _, findings, verdict, _ = client.predict(handle_file(images[i]), [handle_file(r) for r in references],
                                                     "part", 0.3, False, api_name="/inspect")
            history = client.predict(f"Where is the defect on part {i}?", api_name="/ask")
            reports = client.predict(api_name="/report")
        finally:
            client.close()
        html = Path(reports[0] if isinstance(reports[0], str) else reports[0]["path"]).read_text()
        return {"findings": findings["data"], "history": history, "html": html}

    def wave() -> list[dict]:
        with ThreadPoolExecutor(SESSIONS) as pool:
            return list(pool.map(session, range(SESSIONS)))

    try:
        # Two waves warm up the shared reference scorer, thread pools and allocator arenas; two more of the
        # same load must then leave the app's memory flat.
        waves = [wave(), wave()]
        settled = _rss_mb(server.pid)
        waves += [wave(), wave()]
        grown = _rss_mb(server.pid) - settled
    finally:
        server.kill()
        server.wait()
    for results in waves:
        for i, result in enumerate(results):
            assert result["findings"], f"session {i} got no regions"
            location = result["findings"][0][1]
            questions = [m for m in result["history"] if m["role"] == "user"]
            assert len(questions) == 1 and f"part {i}?" in str(questions[0]["content"])
            assert location in str(result["history"][-1]["content"])
            assert f"part_{i:02d}" in result["html"]
            assert not any(f"part_{j:02d}" in result["html"] for j in range(SESSIONS) if j != i)
    print(f"app RSS {settled:.0f} MB after two waves of {SESSIONS} sessions; {grown:+.0f} MB after two more")
    assert grown < 100, f"memory grew {grown:.0f} MB over two more waves of {SESSIONS} sessions (from {settled:.0f})"


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
            client.predict(handle_file(str(big)), [], "", 0.5, False, api_name="/inspect")
    finally:
        demo.close()
