"""Making a product: reference banks fitted and thresholds calibrated, then optionally its own models learned.

`create_product` fits the banks on the good images and calibrates on their
leave-one-out scores; `learn_product_profile` trains the product's learned localizer
(and, with a CLIP bank, its prompts) on simulated defects and fuses each with the
reference scoring on the scales of good images neither part saw. Both store the
result through `ProductStore` (products.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ProductError
from .products import LEARNED_DIR, LEARNED_KEY, PROMPTS_DIR, PROMPTS_KEY, ProductProfile, ProductStore, check_name


@dataclass
class ProductCheck:
    """How a new product's known images fare at its calibrated thresholds, per feature source."""

    profile: ProductProfile
    verdicts: dict[str, dict[str, dict[str, int]]]  # feature -> {"good" | "defective": {verdict: count}}
    failures: list[dict]
    notices: list[str]


def _load_all(paths: Sequence[str], failures: list[dict]) -> tuple[list[str], list]:
    from .io import ImageLimits, collect_samples, load_samples

    pairs = load_samples(collect_samples(list(paths)), ImageLimits(), failures)
    return [str(sample.path) for sample, _ in pairs], [image for _, image in pairs]


def create_product(store: ProductStore, name: str, good: Sequence[str], defective: Sequence[str] = (),
                   notes: str | None = None, options=None, verdicts=None, replace: bool = False) -> ProductCheck:
    """Fit a product's reference banks on its good images and calibrate its thresholds on them.

    Each good image is scored held out of the bank (leave-one-out), so the thresholds
    stand for new good parts. Known defective images never move the FAIL threshold;
    they widen the REVIEW band down to the weakest of them (not below the good parts'
    median), so a known kind of defect is at least sent to a person.
    """
    from dataclasses import replace as changed

    from .errors import WeightsNotFoundError
    from .localizer import ScorerOptions, build_scorer
    from .verdicts import VerdictConfig, count_verdicts, from_good_scores, held_out_scores

    check_name(name)
    options, verdicts = options or ScorerOptions(progress=False), verdicts or VerdictConfig()
    failures: list[dict] = []
    good_paths, good_images = _load_all(good, failures)
    defective_paths, defective_images = _load_all(defective, failures) if defective else ([], [])
    if len(good_images) < 2:
        raise ProductError(f"product {name!r}: needs at least 2 readable good images to calibrate on, got "
                           f"{len(good_images)}")
    features = [options.features] if options.features != "auto" else ["builtin", "clip"]
    banks, thresholds, counts, notices = {}, {}, {}, []
    for feature in features:
        try:
            scorer = build_scorer(changed(options, mode="reference", features=feature), good_images).scorer
        except WeightsNotFoundError as exc:
            if options.features == "clip":
                raise
            notices.append(f"no CLIP bank: {str(exc).splitlines()[0]}")
            continue
        held_out = held_out_scores(scorer, good_images)
        what = f"{len(good_images)} good images' leave-one-out scores"
        calibrated = from_good_scores(held_out, verdicts, "product", what)
        defective_scores = scorer.score(defective_images).image_score if defective_images else np.empty(0)
        if defective_scores.size:
            review = min(max(min(calibrated.review, float(defective_scores.min())), float(np.median(held_out))),
                         calibrated.fail)
            if review < calibrated.review:
                calibrated = changed(calibrated, review=review, detail=f"{calibrated.detail}; REVIEW widened to the "
                                                                       f"weakest of {len(defective_scores)} known defects")
        banks[feature], thresholds[feature] = scorer, calibrated.to_dict()
        counts[feature] = {"good": count_verdicts([calibrated.verdict(s) for s in held_out])}
        if defective_scores.size:
            counts[feature]["defective"] = count_verdicts([calibrated.verdict(s) for s in defective_scores])
    profile = store.add(name, banks, thresholds, good_paths, defective_paths, notes, replace)
    return ProductCheck(profile, counts, failures, notices)


def learn_product_profile(store: ProductStore, name: str, config=None, verdicts=None, progress: bool = True,
                          options=None, prompt_config=None) -> ProductProfile:
    """Train the product's own localizer on its good images (defects simulated on them) and calibrate it.

    Training resumes in `store.training_folder(name)` after a kill. The fused scorer
    (reference scoring on built-in features + the learned model) puts each part on the
    scale of good images it never saw: the bank's leave-one-out scores, the model's
    scores of the held-out images; its thresholds follow from those scales. A product
    with a CLIP bank also gets its object-agnostic prompts fine-tuned on the same
    simulations (`options` say which CLIP and which prompts to start from), calibrated
    the same way.
    """
    from .io import load_image
    from .localizer import ScorerOptions
    from .localizer.factory import builtin_source
    from .localizer.learned import learn_product
    from .localizer.learned_config import LearnConfig
    from .verdicts import VerdictConfig

    profile = store.load(name)
    config, verdicts = config or LearnConfig(), verdicts or VerdictConfig()
    options = options or ScorerOptions(progress=False)
    good = [load_image(path) for path in profile.good]
    learned = learn_product(good, store.training_folder(name), config, progress)
    held = [int(i) for i in learned.record["holdout_indices"]]
    if len(held) < 2:
        raise ProductError(f"product {name!r}: learning needs at least 2 held-out good images to calibrate on "
                           f"(it has {len(profile.good)} good images; hold out more or add images)")
    source = builtin_source(options)  # the store rebuilds it at the bank's own resolution and grid
    thresholds, scales = _held_out_thresholds(store.scorer(name, source, progress=False), "learned", learned, good,
                                              held, verdicts)
    profile = store.attach(name, LEARNED_DIR, store.training_folder(name), learned.describe(), LEARNED_KEY,
                           thresholds.to_dict(), scales)
    if "clip" in profile.features:
        profile = _learn_prompts(store, profile, good, held, options, config, prompt_config, verdicts, progress)
    return profile


def _learn_prompts(store: ProductStore, profile: ProductProfile, good: list, held: list[int], options, config,
                   prompt_config, verdicts, progress: bool) -> ProductProfile:
    """Fine-tune CLIP prompts on the product's training images with simulated defects; calibrate fused with its CLIP bank."""
    from .localizer import build_feature_source, build_localizer
    from .localizer.checkpoint import checkpoint_meta
    from .localizer.product_prompts import ProductPromptConfig, learn_product_prompts

    localizer = build_localizer(options.prompt_checkpoint, "prompt", options.backbone)
    meta = checkpoint_meta(localizer, options.backbone.get("weights"),
                           f"fine-tuned on product {profile.name}'s good images with simulated defects")
    folder = store.training_folder(profile.name, PROMPTS_DIR)
    kept = set(held)
    train = [image for i, image in enumerate(good) if i not in kept]
    checkpoint = learn_product_prompts(localizer, train, folder, meta, config, prompt_config or ProductPromptConfig(),
                                       progress)
    source = build_feature_source("clip", backbone=localizer.backbone, keep_aspect=options.features_keep_aspect)
    thresholds, scales = _held_out_thresholds(store.scorer(profile.name, source, progress=False), "prompt", localizer,
                                              good, held, verdicts, "learned prompts")
    return store.attach(profile.name, PROMPTS_DIR, checkpoint, localizer.describe(), PROMPTS_KEY, thresholds.to_dict(),
                        scales, cleanup=folder)


def _held_out_thresholds(reference, mode: str, learned, good: list, held: list[int], verdicts, named: str = "learned"):
    """Thresholds of the product's reference bank fused with what was learned on it, and the scales fused on.

    Each part is put on the scale of its own good parts' scores (`ModeScale`): the
    reference part by every good image's leave-one-out score, the learned part by the
    held-out images it never trained on. On those scales the thresholds follow from
    the scales' sample sizes alone (`from_scaled_modes`).
    """
    from .localizer import ModeScale
    from .verdicts import from_scaled_modes

    every = reference.leave_one_out()
    unseen = learned.score([good[i] for i in held])
    scales = {"reference": ModeScale.of(every.image_score), mode: ModeScale.of(unseen.image_score)}
    what = (f"reference + {named} fused on their good parts' scales ({len(every.image_score)} leave-one-out scores, "
            f"{len(held)} good images held out of training)")
    return from_scaled_modes([scale.count for scale in scales.values()], verdicts, "product", what), scales
