"""`anomaly-vlm product`: save, learn, list, show and remove product profiles."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ProductError
from .common import print_failures, print_notices
from .options import (LEARNING, LOCALIZER, PROMPT_SOURCE, InputOptions, add_options, configured, scorer_options,
                      verdict_config)


def _notes(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProductError(f"--notes {path}: cannot read it as a text file ({exc.__class__.__name__}: "
                           f"{getattr(exc, 'strerror', None) or exc}); --notes takes the path of a text file "
                           f"holding the notes") from None


def cmd_product_add(args: argparse.Namespace) -> int:
    from ..product_fitting import create_product
    from ..products import ProductStore
    from ..verdicts import describe_thresholds

    notes = _notes(args.notes)
    store = ProductStore()
    check = create_product(store, args.name, args.good, args.defective, notes, scorer_options(args, False),
                           verdict_config(args), args.replace)
    print_notices(check.notices)
    print_failures(check.failures)
    profile = check.profile
    print(f"product {profile.name}: {profile.counts['good']} good, {profile.counts['defective']} defective images "
          f"-> {profile.folder}")
    for feature, counts in check.verdicts.items():
        print(f"  {feature} features: {describe_thresholds(profile.thresholds[feature])}")
        for kind, verdicts in counts.items():
            what = "good images (held out)" if kind == "good" else "known defective images"
            print(f"    {what}: " + ", ".join(f"{v} {k.upper()}" for k, v in verdicts.items()))
    if args.learn:
        learn(args, store)
    return 1 if check.failures else 0


def learn(args: argparse.Namespace, store) -> None:
    from ..localizer.learned_config import LearnConfig, with_recipe
    from ..localizer.learned_scorer import LearnedScorer
    from ..localizer.product_prompts import ProductPromptConfig
    from ..product_fitting import learn_product_profile
    from ..products import LEARNED_KEY, PROMPTS_KEY
    from ..verdicts import describe_thresholds

    base = None
    if args.learn_recipe is not None:  # the recipe's mix; the flags given still win
        from ..synth.recipe import load_recipe

        # the product's own images are the recipe's source (a folder recipe must name one)
        recipe = load_recipe(args.learn_recipe, source_path=Path(store.load(args.name).good[0]).parent)
        base = with_recipe(LearnConfig(), recipe)
    config = configured(args, LearnConfig, base=base)
    profile = learn_product_profile(store, args.name, config, verdict_config(args),
                                    options=scorer_options(args, False), prompt_config=configured(args, ProductPromptConfig))
    print(f"learned localizer for {profile.name}: {profile.learned['model']}, working size "
          f"{'x'.join(map(str, profile.learned['working_size']))}")
    validation = LearnedScorer.load(profile.learned_folder).record.get("validation", {})
    if "image_auroc" in validation:  # the model alone on data one may tune on: no test labels needed
        print(f"  alone, on {validation['defective']} simulated defects over the {profile.learned['holdout']} held-out "
              f"good images: image AUROC {validation['image_auroc']:.3f}, pixel AUROC {validation['pixel_auroc']:.3f}, "
              f"AUPRO {validation['pixel_aupro']:.3f}")
    print(f"  fused with reference scoring: {describe_thresholds(profile.thresholds[LEARNED_KEY])}")
    if profile.prompts:
        print(f"learned prompts for {profile.name}: {profile.prompts['prompts']}")
        print(f"  fused with CLIP reference scoring: {describe_thresholds(profile.thresholds[PROMPTS_KEY])}")


def add_learning(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("learning")
    add_options(group, LEARNING)
    group.add_argument("--learn-recipe", type=Path, default=None, metavar="FILE",
                       help="a synth recipe (data_recipes/) whose simulators, options and defect count the training "
                            "draws; default: the mix of --learn-content")


def cmd_product_learn(args: argparse.Namespace) -> int:
    from ..products import ProductStore

    learn(args, ProductStore())
    return 0


def cmd_product_list(args: argparse.Namespace) -> int:
    from ..products import ProductStore

    store = ProductStore()
    profiles = store.list()
    if not profiles:
        print(f"no products in {store.root}; add one with `anomaly-vlm product add NAME --good DIR`")
    for profile in profiles:
        print(f"{profile.name}\t{profile.counts['good']} good\t{', '.join(profile.features)} features\t"
              f"{profile.created}")
    return 0


def cmd_product_show(args: argparse.Namespace) -> int:
    from ..products import ProductStore

    print(json.dumps(ProductStore().load(args.name).to_dict(), indent=2, ensure_ascii=False))
    return 0


def cmd_product_remove(args: argparse.Namespace) -> int:
    from ..products import ProductStore

    ProductStore().remove(args.name)
    print(f"removed product {args.name}")
    return 0


def add_parsers(commands) -> None:
    from ..products import NAME_RULE
    from ..verdicts import VerdictConfig

    product = commands.add_parser("product", help="saved product profiles: known-good references, thresholds, notes")
    actions = product.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="save a product from its known-good images (and known defective ones)")
    add.add_argument("name", help=f"product name ({NAME_RULE})")
    add.add_argument("--good", nargs="+", required=True, help="known-good images or folders")
    add.add_argument("--defective", nargs="+", default=[], help="known-defective images or folders (checked "
                                                                    "against the calibrated thresholds)")
    add.add_argument("--notes", type=Path, help="text file: normal appearance, known defect kinds (the assistant "
                                                "reads it)")
    add.add_argument("--replace", action="store_true", help="overwrite a product of that name")
    add.add_argument("--learn", action="store_true", help="also train the product's own localizer (see `product learn`)")
    add_options(add.add_argument_group("localizer"), [o for o in LOCALIZER if o.config is not InputOptions])
    add_learning(add)
    add.set_defaults(func=cmd_product_add)

    learning = actions.add_parser("learn", help="train a saved product's own localizer on its good images, with "
                                                "simulated defects; resumes after a kill")
    learning.add_argument("name")
    add_learning(learning)
    add_options(learning.add_argument_group("CLIP (prompts are learned too where its weights load)"), PROMPT_SOURCE)
    add_options(learning.add_argument_group("verdicts"), [o for o in LOCALIZER if o.config is VerdictConfig])
    learning.set_defaults(func=cmd_product_learn)

    listing = actions.add_parser("list", help="the saved products")
    listing.set_defaults(func=cmd_product_list)
    show = actions.add_parser("show", help="one product's profile")
    show.add_argument("name")
    show.set_defaults(func=cmd_product_show)
    remove = actions.add_parser("remove", help="delete a saved product")
    remove.add_argument("name")
    remove.set_defaults(func=cmd_product_remove)
