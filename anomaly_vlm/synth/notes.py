"""Product notes in synthesized findings: what the product is and its usual defects, as a user writes them.

A product profile's notes reach the findings block the assistant reads; synthesized
findings carry such notes too, so the tuned model reads them as evidence. They name a
made-up product (or the recipe's) and often its usual defect kinds, mostly but not
always including the true one, sometimes under another name ("chips").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..errors import DatasetError
from ..templates import text_list
from ..vocabulary import DEFECT_TYPES
from .ground_truth import GroundTruth

if TYPE_CHECKING:
    from .conversations import ConversationConfig, Phrasebook

GENERIC_OBJECTS = ("part", "surface")
"""What procedural recipes call their items when the recipe names no product: notes then name a made-up one."""
MASS_NOUNS = {"missing material", "contamination", "discoloration", "misplaced material", "foreign material"}


def with_article(text: str) -> str:
    return text if text in MASS_NOUNS else f"{'an' if text[0] in 'aeiou' else 'a'} {text}"


def _pairs(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(t, str) and t.strip() for t in p) for p in value)


def note_phrases(data: dict, name: str) -> tuple[list[tuple[str, str]], list[str], dict[str, list[tuple[str, str]]]]:
    """The product notes' vocabulary: products and each defect kind's names as [one, many], note sentences."""
    products = data.get("products")
    if not _pairs(products) or len(products) < 2:
        raise DatasetError(f"{name}: products must list two or more [one, many] product names")
    notes = text_list(data.get("notes"), f"{name}: notes")
    for text in notes:
        if "{product" not in text.lower():
            raise DatasetError(f"{name}: notes: {text!r} names no {{product}}")
    names = data.get("kind_names")
    missing = [k for k in DEFECT_TYPES if not isinstance(names, dict) or not _pairs(names.get(k))]
    if missing:
        raise DatasetError(f"{name}: kind_names needs [one, many] names for {', '.join(missing)}")
    return [tuple(p) for p in products], notes, {k: [tuple(n) for n in names[k]] for k in DEFECT_TYPES}


class ProductNotes(NamedTuple):
    product: str
    """What a product question answers: "a steel washer"."""
    text: str
    """The notes the findings carry."""
    kinds: dict[str, str] = {}
    """The defect kinds the notes name, each by the name they use ("missing material" -> "a chip")."""


TRUE_KIND_IN_NOTES = 0.8
"""How often notes that name usual defects name the true kind among them: evidence, not the answer key."""
NOTES_RIVAL_RATE = 0.6
"""How often each other kind the notes name is among a kind question's options.

MMAD's options are plausible kinds of the same product, so the product's other usual
defects are the distractors to tell apart, by the region's look."""


SIZE_WORDS = {"tiny": "small", "small": "small", "large": "large"}
"""A region's measured size as the adjective a kind option may carry ("a small chip"); medium ones carry none."""
SIZED_KIND_RATE = 0.35
"""How often a kind question's options carry size words, the right kind with its region's own: MMAD's kinds
often do ("a large break"), and the measured size is evidence that tells them apart."""


def sized(name: str, word: str) -> str:
    """"a chip" -> "a small chip"; a kind without an article ("contamination") stays as it is."""
    first, _, rest = name.partition(" ")
    return with_article(f"{word} {rest}") if first in ("a", "an") and rest else name


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def listed(words: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def draw_notes(truth: GroundTruth, object_name: str, rng: np.random.Generator, book: Phrasebook,
               config: ConversationConfig) -> ProductNotes | None:
    """Product notes as a user writes them for a profile, or None (nothing is drawn at a zero notes_rate)."""
    if config.notes_rate <= 0 or rng.random() >= config.notes_rate:
        return None
    if object_name in GENERIC_OBJECTS:
        one, many = book.products[rng.integers(len(book.products))]
    else:
        one, many = with_article(object_name), object_name if object_name.endswith("s") else f"{object_name}s"
    template = book.notes[rng.integers(len(book.notes))]
    kinds: list[str] = []
    names: dict[str, tuple[str, str]] = {}
    if "{kinds}" in template.lower():
        others = [k for k in DEFECT_TYPES if k not in truth.defect_types]
        kinds = [str(k) for k in rng.choice(others, size=int(rng.integers(1, 4)), replace=False)]
        if truth.defect_types and rng.random() < TRUE_KIND_IN_NOTES:
            kinds[0] = truth.defect_types[0]
        kinds = [kinds[i] for i in rng.permutation(len(kinds))]
        names = {k: book.kind_names[k][rng.integers(len(book.kind_names[k]))] for k in kinds}
    named = listed([names[k][1] for k in kinds]) if kinds else ""
    text = template.format(product=one, Product=_capital(one), products=many, Products=_capital(many),
                           kinds=named, Kinds=_capital(named))
    return ProductNotes(one, text, {k: names[k][0] for k in kinds})
