"""Scoring archives on a Ray cluster: the engine's backend with Ray Data and an actor pool.

The engine keeps what decides reuse (digests, fingerprints, the record store) on the
driver; only the images that need scoring go to Ray. Ray Data reads their paths, and
`map_batches` runs a pool of actors that each hold one scorer (shipped once per
actor, with `num_gpus` where the cluster has GPUs). A product whose images score each
other (mutual) goes to one actor as one batch. Results come back to the driver, which
writes the same records as the local engine.

Install with `pip install -e ".[ray]"`; connect with `--ray-address` or `RAY_ADDRESS`
(else a local Ray starts with this machine's cores).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .engine import CHUNK, Row, failure, prediction_rows
from .errors import AnomalyVLMError
from .io import ImageLimits, load_samples
from .localizer import AnomalyScorer
from .types import Sample


@dataclass
class RayConfig:
    """Where and how wide to score with Ray."""

    address: str | None = field(default=None, metadata={
        "help": "Ray cluster to join (ray://HOST:10001 or HOST:6379); default $RAY_ADDRESS, else a local Ray"})
    actors: int = field(default=2, metadata={"help": "scoring actors, each holding one scorer"})
    gpus_per_actor: float | None = field(default=None, metadata={
        "help": "GPUs each actor reserves; default 1 where the cluster has GPUs, else 0"})
    batch_size: int = field(default=CHUNK, metadata={"help": "images per actor call (mutual sets go whole)"})


def _ray():
    try:
        import ray
    except ImportError:
        raise AnomalyVLMError("--engine ray needs Ray: pip install -e '.[ray]' (or pip install 'ray[data]')") from None
    return ray


class _ScoringActor:
    """Holds one scorer; scores a batch of image paths and returns one row per path (or its failure)."""

    def __init__(self, scorer: AnomalyScorer, limits: ImageLimits, product: str | None):
        self.scorer, self.limits, self.product = scorer, limits, product

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        samples = [Sample(Path(p)) for p in batch["path"]]
        failures: list[dict] = []
        pairs = load_samples(samples, self.limits, failures)
        rows: dict[str, Row] = {}
        if pairs:
            try:
                prediction = self.scorer.score([image for _, image in pairs], object_name=self.product)
            except AnomalyVLMError as exc:
                failures += [failure(s.path, f"{s.path}: could not be scored: {exc}", "unscored") for s, _ in pairs]
            else:
                rows = {str(r.sample.path): r for r in prediction_rows([s for s, _ in pairs],
                                                                       [i for _, i in pairs], prediction, False)}
        failed = {f["path"]: f for f in failures}
        out: dict[str, list] = {key: [] for key in ("path", "failure", "score", "map", "shape", "scores", "modes",
                                                    "size")}
        for path in batch["path"]:
            row = rows.get(str(path))
            out["path"].append(str(path))
            out["failure"].append(json.dumps(failed.get(str(path))))
            out["score"].append(row.score if row else 0.0)
            out["map"].append(row.anomaly_map.astype(np.float16).tobytes() if row else b"")
            out["shape"].append(json.dumps(row.anomaly_map.shape if row else ()))
            out["scores"].append(json.dumps(row.scores if row else {}))
            out["modes"].append(json.dumps(row.modes if row else ()))
            out["size"].append(json.dumps(row.image_size if row else ()))
        return out


class RayBackend:
    """The engine's scoring step on Ray Data; see the module docstring."""

    def __init__(self, config: RayConfig = RayConfig(), limits: ImageLimits = ImageLimits()):
        self.config, self.limits = config, limits
        ray = _ray()
        if not ray.is_initialized():
            ray.init(address=config.address, include_dashboard=False, log_to_driver=False,
                     ignore_reinit_error=True)
        if config.gpus_per_actor is not None:
            self.gpus = config.gpus_per_actor
        else:
            self.gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0

    def score(self, scorer: AnomalyScorer, todo: list[Sample], product: str | None,
              loaded: dict | None, failures: list[dict]) -> Iterator[Row]:
        if not todo:
            return
        ray = _ray()
        whole = loaded is not None
        by_path = {str(s.path): s for s in todo}
        dataset = ray.data.from_items([{"path": str(s.path)} for s in todo])
        results = dataset.map_batches(
            _ScoringActor, fn_constructor_args=(scorer, self.limits, product),
            batch_size=len(todo) if whole else self.config.batch_size,
            concurrency=1 if whole else max(1, min(self.config.actors, len(todo))),
            num_gpus=self.gpus, batch_format="numpy")
        for item in results.iter_rows():
            sample = by_path[item["path"]]
            failed = json.loads(item["failure"])
            if failed:
                failures.append(failed)
                continue
            shape = tuple(json.loads(item["shape"]))
            anomaly_map = np.frombuffer(item["map"], dtype=np.float16).reshape(shape).astype(np.float32)
            yield Row(sample, float(item["score"]), anomaly_map, json.loads(item["scores"]),
                      tuple(json.loads(item["modes"])), tuple(json.loads(item["size"])),
                      loaded.get(id(sample)) if whole else None)
