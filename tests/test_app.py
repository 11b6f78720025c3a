"""The Gradio app: its functions called directly, then the running app driven through gradio_client."""

import json
import socket
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from anomaly_vlm.errors import AnomalyVLMError
from anomaly_vlm.inspector import Inspector, InspectorConfig
from anomaly_vlm.io import ImageLimits
from anomaly_vlm.localizer import ScorerOptions
from anomaly_vlm.files import safe_stem
from anomaly_vlm.ui import AppConfig, InspectionApp, Session, launch
from anomaly_vlm.verdicts import VerdictConfig

from .assistant_models import FindingsAssistant


def app_inspector(**limits) -> Inspector:
    config = InspectorConfig(scorer=ScorerOptions(features="builtin", progress=False),
                             verdicts=VerdictConfig(threshold=0.3), limits=ImageLimits(**limits))
    return Inspector(config, assistant=FindingsAssistant())


@pytest.fixture(scope="module")
def widget(dataset_root):
    category = dataset_root / "widget"
    return {"defective": sorted((category / "test" / "stain").glob("*.png")),
            "good": sorted((category / "test" / "good").glob("*.png")),
            "references": [str(p) for p in sorted((category / "train" / "good").glob("*.png"))]}


def test_session_folder_is_made_on_first_use_and_removed_on_close(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    sessions = [Session() for _ in range(3)]  # Gradio builds one per page load
    assert not list(tmp_path.iterdir())
    folder = sessions[0].folder
    assert folder.is_dir() and folder.parent == tmp_path and sessions[0].folder == folder
    (folder / "report.html").write_text("x")
    for session in sessions:
        session.close()
    assert not list(tmp_path.iterdir())


def test_inspect_chat_and_report_functions(widget):
    app = InspectionApp(app_inspector())
    session = Session()
    shown, rows, verdict, chat, session = app.inspect(str(widget["defective"][0]), widget["references"], "widget",
                                                      0.3, False, session)
    inspection = session.inspection
    assert shown.size == (64, 64) and chat == [] and len(rows) == len(inspection.regions)
    assert ("FAIL" in verdict) == bool(inspection.label) and f"{inspection.image_score:.2f}" in verdict
    assert rows and rows[0][1] == inspection.regions[0].location
    updates = list(app.chat("Is anything wrong?", session))
    assert len(updates) > 2 and len(updates[1][0][-1]["content"]) < len(updates[-2][0][-1]["content"])
    history = updates[-1][0]
    assert history[0] == {"role": "user", "content": "Is anything wrong?"}
    assert inspection.regions[0].location in history[1]["content"] and len(session.turns) == 1
    html, pdf = app.report(session)
    assert html.endswith(".html") and pdf.endswith(".pdf") and Path(html).parent.is_relative_to(session.folder)
    text = Path(html).read_text()
    assert inspection.regions[0].location in text and history[1]["content"].split(" ")[0] in text
    again = app.inspect(str(widget["good"][0]), None, "widget", 0.3, False, session)[-1]
    assert again.turns == [] and again.inspection.image_id == safe_stem(widget["good"][0].stem)


def test_errors_and_limits_reach_the_user(widget):
    app = InspectionApp(app_inspector(max_pixels=1000))
    with pytest.raises(AnomalyVLMError, match="upload an image"):
        app.inspect(None, None, "", 0.5, True, Session())
    with pytest.raises(AnomalyVLMError, match=r"000\.png: 64x64 pixels is over the limit of 1000"):
        app.inspect(str(widget["good"][0]), None, "", 0.5, True, Session())
    with pytest.raises(AnomalyVLMError, match="inspect an image first"):
        list(InspectionApp(app_inspector()).chat("Where?", Session()))


def test_batch_unpacks_zips_safely_and_ranks_the_images(widget, tmp_path):
    archive = tmp_path / "parts.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for i, path in enumerate(widget["defective"][:2] + widget["good"][:2]):
            bundle.write(path, f"../../escape_{i}.png" if i == 0 else f"nested/dir/{i}.png")
        bundle.writestr("notes.txt", "not an image")
        bundle.writestr("broken.png", b"\x89PNG broken")
    app = InspectionApp(app_inspector())
    session = Session()
    rows, summary, files, session = app.inspect_batch([str(archive), str(widget["good"][3])], widget["references"],
                                                      "widget", 0.3, False, session)
    written = [p for p in session.folder.rglob("*") if p.is_file()]
    assert written and all(p.resolve().is_relative_to(session.folder.resolve()) for p in written)
    assert not list(tmp_path.parent.glob("escape_*")) and not (tmp_path / "escape_0.png").exists()
    scores = [row[2] for row in rows]
    assert len(rows) == 5 and scores == sorted(scores, reverse=True) and [r[0] for r in rows] == [1, 2, 3, 4, 5]
    assert "broken.png" in summary and "1 unreadable" in summary
    assert {Path(f).suffix for f in files} == {".html", ".pdf"}
    with pytest.raises(AnomalyVLMError, match="more than 2 images"):
        InspectionApp(app_inspector(), AppConfig(max_batch=2)).inspect_batch([str(archive)], None, "", 0.3, False,
                                                                         Session())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def running_app():
    config = AppConfig(port=_free_port(), concurrency=4)
    demo = launch(app_inspector(), config, block=False)
    yield f"http://127.0.0.1:{config.port}/"
    demo.close()


def test_the_running_app_through_gradio_client(running_app, widget, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(running_app, verbose=False, download_files=str(tmp_path))
    heatmap, findings, verdict, chat = client.predict(
        handle_file(str(widget["defective"][1])), [handle_file(p) for p in widget["references"]], "widget", 0.3,
        False, api_name="/inspect")
    assert Image.open(heatmap).size == (64, 64) and chat == []
    assert "Anomaly score" in verdict and len(findings["data"]) >= 1
    location = findings["data"][0][1]
    history = client.predict("Where is the defect?", api_name="/ask")
    assert history[-1]["role"] == "assistant" and location in json.dumps(history[-1]["content"])
    reports = client.predict(api_name="/report")
    paths = [Path(r if isinstance(r, str) else r["path"]) for r in reports]
    assert {p.suffix for p in paths} == {".html", ".pdf"} and location in paths[0].read_text()
    assert paths[1].read_bytes().startswith(b"%PDF")
