"""Defect reports in every format, and the `report` command end to end."""

import json
import re

import jsonschema
import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from anomaly_vlm.cli import main
from anomaly_vlm.proposals import make_region
from anomaly_vlm.report import FORMATS, SCHEMA_PATH, ReportEntry, report_document, write_report
from anomaly_vlm.types import Inspection
from anomaly_vlm.verdicts import Thresholds


def _inspection(name: str, score: float, regions: int, size=(120, 90)) -> Inspection:
    rng = np.random.default_rng(len(name))
    width, height = size
    found = [make_region((10 + 30 * i, 10, 30 + 30 * i, 40), width, height, 300, 0.9 - 0.1 * i, 0.7 - 0.1 * i)
             for i in range(regions)]
    return Inspection(name, score, 0.7, found, {"mode": "reference", "features": "builtin"}, size,
                      image=Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)),
                      anomaly_map=rng.random((height // 2, width // 2)).astype(np.float32), review_threshold=0.5,
                      threshold_source="references")


ENTRIES = [ReportEntry(_inspection("part_a.png", 0.31, 0), path="in/part_a.png"),
           ReportEntry(_inspection("part_b.png", 0.93, 2), path="in/part_b.png",
                       explanation="A scratch at the top left — moderate <b>severity</b>.",
                       flags=["names the bottom, where the localizer has regions only at the top left"]),
           ReportEntry(_inspection("part_c.png", 0.64, 1), path="in/part_c.png")]
FAILURES = [{"path": "in/empty.png", "error": "in/empty.png: file is empty", "kind": "unreadable"}]
THRESHOLDS = Thresholds(0.7, 0.5, "references", "8 references' leave-one-out scores")


def test_every_format_holds_the_findings(tmp_path):
    written = write_report(ENTRIES, tmp_path, "batch", FORMATS, FAILURES, settings={"threshold": 0.5},
                           assistant={"backend": "text", "model": "tiny"}, thresholds=THRESHOLDS)
    assert set(written) == set(FORMATS) and all(p.is_file() for p in written.values())

    document = json.loads(written["json"].read_text())
    jsonschema.validate(document, json.loads(SCHEMA_PATH.read_text()))
    assert document["schema_version"] == 2 and document["kind"] == "batch"
    assert [i["image_id"] for i in document["images"]] == ["part_b.png", "part_c.png", "part_a.png"]
    assert [i["verdict"] for i in document["images"]] == ["fail", "review", "pass"]
    assert document["summary"] == {"total": 4, "pass": 1, "review": 1, "fail": 1, "unreadable": 1, "unscored": 0,
                                   "errors": 1, "thresholds": THRESHOLDS.to_dict()}
    assert document["images"][0]["regions"][0]["location"] == ENTRIES[1].inspection.regions[0].location
    assert document["failures"] == FAILURES

    html = written["html"].read_text()
    assert 'id="results"' in html and html.count("<tr>") >= 3 + 1 + 3
    assert len(re.findall(r'src="data:image/jpeg;base64,', html)) == 6 and "data:image/png;base64," in html
    assert "&lt;b&gt;severity&lt;/b&gt;" in html and "<b>severity" not in html
    assert "in/empty.png" in html and "FAIL: anomaly found" in html and "PASS: no anomaly found" in html
    assert "REVIEW: uncertain" in html and "1 FAIL, 1 REVIEW, 1 PASS" in html
    assert "REVIEW from 0.50 (references: 8 references" in html

    markdown = written["md"].read_text()
    links = re.findall(r"\]\((batch_files/[^)]+)\)", markdown)
    assert len(links) == 7 and all((tmp_path / link).is_file() for link in links)
    assert "| 1 | part_b.png | 0.930 |" in markdown

    pdf = PdfReader(written["pdf"])
    text = "\n".join(page.extract_text() for page in pdf.pages)
    assert len(pdf.pages) >= 2 and "part_b.png" in text and "Batch inspection report" in text
    assert "moderate" in text and "top left" in text and "REVIEW" in text


def test_one_image_report_and_bad_format(tmp_path):
    written = write_report(ENTRIES[1:2], tmp_path, "one", ("json", "html"))
    document = json.loads(written["json"].read_text())
    assert document["kind"] == "image" and document["images"][0]["explanation"].startswith("A scratch")
    assert "Results, worst first" not in written["html"].read_text()
    with pytest.raises(ValueError, match="unknown report format"):
        write_report(ENTRIES, tmp_path, "bad", ("docx",))
    assert report_document([])["summary"]["total"] == 0


def test_report_command_inspects_and_writes_every_report(dataset_root, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for source in sorted((dataset_root / "widget" / "test").glob("*/*.png"))[::2]:
        (images / f"{source.parent.name}_{source.name}").write_bytes(source.read_bytes())
    (images / "zero.png").write_bytes(b"")
    out = tmp_path / "report"
    code = main(["report", str(images), "--out", str(out), "--references", str(dataset_root / "widget" / "train"),
                 "--features", "builtin", "--explain", "0", "--per-image", "all", "--format", "json,html,pdf"])
    assert code == 1
    document = json.loads((out / "report.json").read_text())
    assert document["summary"]["total"] == 7 and document["summary"]["errors"] == 1
    assert document["summary"]["unreadable"] == 1 and document["summary"]["thresholds"]["source"] == "references"
    assert {i["verdict"] for i in document["images"]} <= {"pass", "review", "fail"}
    assert "zero.png" in document["failures"][0]["path"] and "empty" in document["failures"][0]["error"]
    assert document["assistant"] is None and document["images"][0]["models"]["mode"] == "reference"
    assert len(list((out / "images").glob("*.pdf"))) == 6 and (out / "report.html").is_file()
    assert not (out / "report.md").exists() and not list(out.rglob("*.tmp"))
    printed = capsys.readouterr()
    assert "6 inspected" in printed.out and "1 unreadable" in printed.out and "zero.png" in printed.err


def test_batch_reports_measure_the_look_of_the_regions_they_show(dataset_root, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(dataset_root / "widget" / "test" / "stain"), "--out", str(out), "--references",
                 str(dataset_root / "widget" / "train"), "--features", "builtin", "--explain", "0", "--details", "2",
                 "--per-image", "none", "--format", "json,html", "--threshold", "0.2"]) == 0
    document = json.loads((out / "report.json").read_text())
    shown, rest = document["images"][:2], document["images"][2:]
    assert all("attributes" in r for i in shown for r in i["regions"]) and any(i["regions"] for i in shown)
    assert all("attributes" not in r for i in rest for r in i["regions"])    # batch runs keep no images
    assert "Looks" in (out / "report.html").read_text()
