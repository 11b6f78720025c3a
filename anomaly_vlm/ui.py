"""The Gradio inspection app: one image with a chat about it, or a batch with a score table.

`InspectionApp` holds the app's functions and is tested without a browser; `build_ui`
only lays them out. Each browser session keeps its own inspection, chat turns and
report folder in a `gr.State`, so nothing is shared between users but the models.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .assistant.dialogue import Turn
from .errors import AnomalyVLMError, ImageLoadError
from .files import safe_stem
from .inspector import Inspector
from .io import is_image_name, load_image
from .localizer import describe_models
from .product_fitting import create_product
from .report import ReportEntry, ReportOptions, settings_of, write_report
from .templates import load_yaml
from .types import Inspection
from .verdicts import count_verdicts, describe_thresholds
from .visualize import annotate
from .vocabulary import REGION_COLUMNS, VERDICT_MEANINGS, VERDICT_WORDS, region_row, score_text

FINDINGS_HEADERS = [load_yaml("report.yaml")["columns"][key] for key in REGION_COLUMNS]
NO_PRODUCT = "(none)"
BATCH_HEADERS = ["rank", "image", "score", "verdict", "regions", "strongest region"]


def _env_port() -> int:
    value = os.environ.get("GRADIO_SERVER_PORT", "7860")
    try:
        return int(value)
    except ValueError:
        raise AnomalyVLMError(f"GRADIO_SERVER_PORT must be a port number, got {value!r}") from None


@dataclass
class AppConfig:
    host: str = field(default_factory=lambda: os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                      metadata={"help": "address to listen on (default: $GRADIO_SERVER_NAME, else 127.0.0.1)"})
    port: int = field(default_factory=_env_port,
                      metadata={"help": "port to listen on (default: $GRADIO_SERVER_PORT, else 7860)"})
    concurrency: int = field(default=2, metadata={"help": "requests worked on at once; the rest wait in the queue"})
    queue_size: int = field(default=64, metadata={"help": "requests that may wait; more are turned away"})
    max_upload_mb: int = field(default=25, metadata={"help": "largest uploaded file"})
    max_batch: int = field(default=200, metadata={"help": "most images in one batch (zip members included)"})
    max_references: int = field(default=16, metadata={"help": "most reference images per inspection"})
    share: bool = field(default=False, metadata={"help": "ask Gradio for a public link (needs the internet)"})


@dataclass
class Session:
    """One browser session: its current inspection, the chat about it, and its private folder.

    The folder is made on first use: Gradio builds a session for every page load (and
    some at start-up), most of which never write a file.
    """

    inspection: Inspection | None = None
    turns: list[Turn] = field(default_factory=list)
    _folder: Path | None = field(default=None, repr=False)

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="anomaly-vlm-session-"))
        return self._folder

    def close(self) -> None:
        """Remove the session's files (Gradio calls this when the browser session ends)."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def _path_of(upload) -> Path:
    """Gradio hands uploads over as paths (str) or as objects with a `.name`."""
    return Path(upload if isinstance(upload, (str, Path)) else upload.name)


def findings_rows(inspection: Inspection) -> list[list]:
    rows = [region_row(n, r.to_dict()) for n, r in enumerate(inspection.regions, 1)]
    return [[row[key] for key in REGION_COLUMNS] for row in rows]


def verdict_markdown(inspection: Inspection, notices: list[str] = ()) -> str:
    word = f"**{VERDICT_WORDS[inspection.verdict]}: {VERDICT_MEANINGS[inspection.verdict]}**"
    thresholds = {"fail": inspection.threshold, "review": inspection.review_threshold,
                  "source": inspection.threshold_source}
    lines = [f"### {word}", f"Anomaly score **{score_text(inspection.image_score)}** · {len(inspection.regions)} region(s)",
             f"Thresholds: {describe_thresholds(thresholds)}",
             f"Localizer: {describe_models(inspection.models)}"]
    return "\n\n".join(lines + [f"> {n.splitlines()[-1]}" for n in notices])


class InspectionApp:
    """What the UI's buttons do, as plain methods (the tests drive these directly)."""

    def __init__(self, inspector: Inspector, config: AppConfig = AppConfig()):
        self.inspector, self.config = inspector, config

    def _load(self, upload) -> tuple[Image.Image, str]:
        path = _path_of(upload)
        return load_image(path, self.inspector.config.limits), safe_stem(Path(path.name).stem, 80, 'image')

    def _references(self, uploads) -> list[Image.Image] | None:
        if not uploads:
            return None
        if len(uploads) > self.config.max_references:
            raise AnomalyVLMError(f"{len(uploads)} reference images; at most {self.config.max_references} are used")
        return [self._load(u)[0] for u in uploads]

    def products(self) -> list[str]:
        """The saved products, for the product dropdown."""
        return [NO_PRODUCT] + [p.name for p in self.inspector.products.list()]

    def _product(self, product: str | None, references) -> tuple[str | None, str | None]:
        """(category, saved product): a saved product's name loads its profile unless references are given;
        any other name only remembers the references last given under it."""
        name = None if not product or product.strip() == NO_PRODUCT else product.strip()
        saved = name if name and not references and self.inspector.products.exists(name) else None
        return name, saved

    def save_product(self, name: str, references, notes: str) -> tuple[str, list[str]]:
        """Save the current references as a new product; returns a message and the refreshed product list."""
        if not references:
            raise AnomalyVLMError("add the known-good reference images to save as a product")
        check = create_product(self.inspector.products, (name or "").strip(), [str(_path_of(r)) for r in references],
                               notes=notes.strip() or None, options=self.inspector.config.scorer,
                               verdicts=self.inspector.config.verdicts)
        profile = check.profile
        lines = [f"Saved product **{profile.name}** ({profile.counts['good']} good images)."]
        lines += [f"{feature}: {describe_thresholds(profile.thresholds[feature])}" for feature in profile.features]
        return "\n\n".join(lines), self.products()

    def inspect(self, upload, references, product: str, threshold: float, automatic: bool, session: Session):
        """Score the uploaded image: annotated heatmap, findings rows, verdict text; the chat starts over."""
        if upload is None:
            raise AnomalyVLMError("upload an image to inspect")
        image, name = self._load(upload)
        given = self._references(references)
        category, saved = self._product(product, given)
        inspection = self.inspector.inspect(image, category=category, references=given, image_id=name,
                                            threshold=None if automatic else float(threshold), product=saved)
        session.inspection, session.turns = inspection, []
        shown = annotate(image, inspection.anomaly_map, inspection.regions)
        return shown, findings_rows(inspection), verdict_markdown(inspection, self.inspector.notices), [], session

    def chat(self, question: str, session: Session) -> Iterator[tuple[list[dict], Session]]:
        """Stream the assistant's answer into the chat history (messages format)."""
        if session.inspection is None:
            raise AnomalyVLMError("inspect an image first, then ask about it")
        if not question or not question.strip():
            raise AnomalyVLMError("type a question")
        dialogue = self.inspector.dialogue(session.inspection, session.turns)
        history = self._history(session.turns) + [{"role": "user", "content": question}]
        answer = ""
        for piece in dialogue.ask(question):
            answer += piece
            yield history + [{"role": "assistant", "content": answer}], session
        session.turns = list(dialogue.turns)
        yield self._history(session.turns), session

    @staticmethod
    def _history(turns: list[Turn]) -> list[dict]:
        history = []
        for turn in turns:
            answer = turn.answer + "".join(f"\n\n> ⚠ check: the answer {flag}" for flag in turn.flags)
            history += [{"role": "user", "content": turn.question}, {"role": "assistant", "content": answer}]
        return history

    def report(self, session: Session) -> list[str]:
        """HTML and PDF reports of the current inspection, with the chat's last answer as the explanation."""
        if session.inspection is None:
            raise AnomalyVLMError("inspect an image first")
        last = session.turns[-1] if session.turns else None
        entry = ReportEntry(session.inspection, explanation=last.answer if last else None,
                            flags=list(last.flags) if last else [])
        assistant = self.inspector.assistant.describe() if last else None
        written = write_report([entry], session.folder / "report", safe_stem(session.inspection.image_id, 80, 'image'),
                               ("html", "pdf"), settings=settings_of(self.inspector.config), assistant=assistant)
        return [str(written["html"]), str(written["pdf"])]

    def _batch_files(self, uploads, folder: Path) -> list[Path]:
        """Uploaded images, and the images inside uploaded zips, copied under `folder` with safe names."""
        folder.mkdir(parents=True, exist_ok=True)
        files, taken = [], set()

        def place(name: str, data_source) -> None:
            if len(files) >= self.config.max_batch:
                raise AnomalyVLMError(f"more than {self.config.max_batch} images in one batch")
            stem, suffix = safe_stem(Path(name).stem, 80, 'image'), Path(name).suffix.lower()
            target, n = folder / f"{stem}{suffix}", 1
            while target.name in taken:
                target, n = folder / f"{stem}-{n}{suffix}", n + 1
            taken.add(target.name)
            with open(target, "wb") as out:
                shutil.copyfileobj(data_source, out, length=1 << 20)
            files.append(target)

        limit = self.config.max_upload_mb * 2**20
        for upload in uploads or []:
            path = _path_of(upload)
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as archive:
                    members = [m for m in archive.infolist() if not m.is_dir() and is_image_name(m.filename)]
                    if sum(m.file_size for m in members) > 4 * limit:
                        raise AnomalyVLMError(f"{path.name}: unpacks to more than {4 * self.config.max_upload_mb} MB")
                    for member in members:
                        with archive.open(member) as data:
                            place(Path(member.filename).name, data)
            else:
                with open(path, "rb") as data:
                    place(path.name, data)
        if not files:
            raise AnomalyVLMError("upload images, or a zip of images")
        return files

    def inspect_batch(self, uploads, references, product: str, threshold: float, automatic: bool,
                      session: Session):
        """Score a batch: rows worst first, and the HTML and PDF batch reports."""
        run_folder = Path(tempfile.mkdtemp(prefix="batch-", dir=session.folder))
        files = self._batch_files(uploads, run_folder / "images")
        given = self._references(references)
        category, saved = self._product(product, given)
        run = self.inspector.inspect_batch([str(f) for f in files], references=given, category=category,
                                           threshold=None if automatic else float(threshold), progress=False,
                                           product=saved)
        order = sorted(range(len(run.inspections)), key=lambda k: -run.inspections[k].image_score)
        rows = [[n, run.inspections[k].image_id, round(run.inspections[k].image_score, 4),
                 VERDICT_WORDS[run.inspections[k].verdict], len(run.inspections[k].regions),
                 run.inspections[k].regions[0].location if run.inspections[k].regions else "-"]
                for n, k in enumerate(order, 1)]
        entries = [ReportEntry(i, path=p) for i, p in zip(run.inspections, run.paths)]
        written = write_report(entries, run_folder, "batch-report", ("html", "pdf"), run.failures,
                               settings_of(self.inspector.config), options=ReportOptions(details=10),
                               thresholds=run.thresholds)
        failures = "\n".join(f"- `{Path(f['path']).name}`: {f['error'].split(': ', 1)[-1]}" for f in run.failures)
        counts = count_verdicts([i.verdict for i in run.inspections])
        kinds = [f.get("kind") for f in run.failures]
        summary = (f"**{len(run.inspections)}** inspected: **{counts['fail']}** FAIL, **{counts['review']}** REVIEW, "
                   f"**{counts['pass']}** PASS; {kinds.count('unreadable')} unreadable, {kinds.count('unscored')} "
                   f"could not be scored\n\nThresholds: {describe_thresholds(run.thresholds.to_dict())}"
                   + (f"\n\n{failures}" if failures else ""))
        return rows, summary, [str(written["html"]), str(written["pdf"])], session


def _guarded(function):
    """Turn the library's errors into a message in the UI instead of a generic 'Error'."""
    import functools
    import inspect

    import gradio as gr

    if inspect.isgeneratorfunction(function):
        @functools.wraps(function)
        def streaming(*args):
            try:
                yield from function(*args)
            except (AnomalyVLMError, ImageLoadError, ValueError) as exc:
                raise gr.Error(str(exc)) from None
        return streaming

    @functools.wraps(function)
    def plain(*args):
        try:
            return function(*args)
        except (AnomalyVLMError, ImageLoadError, ValueError) as exc:
            raise gr.Error(str(exc)) from None
    return plain


def build_ui(app: InspectionApp):
    import gradio as gr

    with gr.Blocks(title="anomaly-vlm inspection", analytics_enabled=False) as demo:
        session = gr.State(lambda: Session(), delete_callback=Session.close)  # a factory: one Session per visitor
        gr.Markdown("# anomaly-vlm inspection\nUpload a part photo, inspect it, then ask what is wrong, "
                    "where and why. Without CLIP weights, add a few known-good reference images.")
        with gr.Tab("Inspect"):
            with gr.Row():
                with gr.Column(scale=1):
                    upload = gr.Image(type="filepath", label="Part photo", height=360, elem_id="upload")
                    references = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                                         label="Known-good reference images (optional)", elem_id="references")
                    product = gr.Dropdown(app.products(), value=NO_PRODUCT, elem_id="product", allow_custom_value=True,
                                          label="Product (a saved one, or a name to remember these references by)")
                    with gr.Row():
                        automatic = gr.Checkbox(value=app.inspector.config.verdicts.threshold is None,
                                                label="Calibrated thresholds", elem_id="automatic")
                        threshold = gr.Slider(0.05, 0.95, value=app.inspector.config.verdicts.threshold or 0.5,
                                              step=0.01, label="Fixed FAIL threshold")
                    inspect_button = gr.Button("Inspect", variant="primary", elem_id="inspect")
                with gr.Column(scale=1):
                    heatmap = gr.Image(type="pil", label="Anomaly heatmap and regions", interactive=False,
                                       height=360, elem_id="heatmap")
                    verdict = gr.Markdown(elem_id="verdict")
                    findings = gr.Dataframe(headers=FINDINGS_HEADERS, label="Findings", interactive=False)
            chatbot = gr.Chatbot(label="Assistant", height=360, elem_id="chat")
            with gr.Row():
                question = gr.Textbox(placeholder="Is anything wrong, where, and why?", show_label=False,
                                      scale=4, elem_id="question")
                ask_button = gr.Button("Ask", scale=1, elem_id="ask")
            with gr.Row():
                report_button = gr.Button("Download report (HTML, PDF)", elem_id="report")
                report_files = gr.File(label="Report", file_count="multiple", interactive=False)
            with gr.Accordion("Save the references as a product", open=False):
                with gr.Row():
                    product_name = gr.Textbox(label="Product name", placeholder="e.g. bottle-500ml", scale=2)
                    product_notes = gr.Textbox(label="Notes for the assistant (optional)", scale=3,
                                               placeholder="normal appearance, known defect kinds")
                save_button = gr.Button("Save product", elem_id="save-product")
                saved = gr.Markdown()
            inspect_button.click(_guarded(app.inspect), [upload, references, product, threshold, automatic, session],
                                 [heatmap, findings, verdict, chatbot, session], api_name="inspect")
            ask = {"fn": _guarded(app.chat), "inputs": [question, session], "outputs": [chatbot, session]}
            ask_button.click(**ask, api_name="ask")
            question.submit(**ask, api_visibility="private")
            for trigger in (ask_button.click, question.submit):   # the question is read when the event fires,
                trigger(lambda: "", None, question, queue=False, api_visibility="private")   # so clear it at once
            report_button.click(_guarded(app.report), [session], [report_files], api_name="report")
        with gr.Tab("Batch"):
            batch_uploads = gr.File(file_count="multiple", file_types=["image", ".zip"], type="filepath",
                                    label="Images or a zip of images")
            batch_references = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                                       label="Known-good reference images (optional)")
            with gr.Row():
                batch_product = gr.Dropdown(app.products(), value=NO_PRODUCT, label="Product", allow_custom_value=True)
                batch_automatic = gr.Checkbox(value=app.inspector.config.verdicts.threshold is None,
                                              label="Calibrated thresholds")
                batch_threshold = gr.Slider(0.05, 0.95, value=app.inspector.config.verdicts.threshold or 0.5,
                                            step=0.01, label="Fixed FAIL threshold")
            batch_button = gr.Button("Inspect batch", variant="primary")
            batch_summary = gr.Markdown()
            batch_table = gr.Dataframe(headers=BATCH_HEADERS, label="Scores, worst first (click a header to sort)",
                                       interactive=False)
            batch_files = gr.File(label="Batch report", file_count="multiple", interactive=False)
            batch_button.click(_guarded(app.inspect_batch),
                               [batch_uploads, batch_references, batch_product, batch_threshold, batch_automatic,
                                session],
                               [batch_table, batch_summary, batch_files, session], api_name="inspect_batch")
        def save(name: str, uploads, notes: str):
            message, names = app.save_product(name, uploads, notes)
            return message, gr.update(choices=names), gr.update(choices=names)

        save_button.click(_guarded(save), [product_name, references, product_notes], [saved, product, batch_product],
                          api_name="save_product")
    demo.queue(default_concurrency_limit=app.config.concurrency, max_size=app.config.queue_size)
    return demo


def launch(inspector: Inspector, config: AppConfig = AppConfig(), block: bool = True):
    """Serve the app; returns the Blocks (still serving) when `block` is False."""
    demo = build_ui(InspectionApp(inspector, config))
    demo.launch(server_name=config.host, server_port=config.port, share=config.share,
                max_file_size=f"{config.max_upload_mb}mb", prevent_thread_lock=not block, show_error=True,
                quiet=not block)
    return demo
