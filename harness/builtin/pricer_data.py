"""A deterministic generator of product listings for the builtin "pricer" exercise.

Each product is drawn from a small catalog (category, product type, brand, material, size, features) and
described in one of several sentence shapes; its price comes from a hidden multiplicative formula plus
feature add-ons and ~12% lognormal noise. The formula is learnable from the text, which is the point:
a fine-tune that works should beat the category mean, and a broken one should not.

Only `random.Random(seed).random()` is used (never `hash()`, `choice()` or `gauss()`), so the rows are
identical across runs, machines and Python versions: `Random.random()` is the one stream CPython
guarantees to keep stable.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

# The exercise's question and answer start, around every description (harness.tasks.pricer builds the
# prompt from them). Defined here, below the tasks, because the builtin tokenizer is trained on them.
QUESTION = "How much does this cost to the nearest dollar?"
RESPONSE = "Price is $"

# The catalog reads best as a table, so the formatter leaves it alone.
# fmt: off
# Brand tiers multiply the price; a premium brand is ~3x a budget brand for the same product.
TIERS: dict[str, float] = {"premium": 1.8, "standard": 1.0, "budget": 0.6}
# (word, price factor): a bigger item costs more (and weighs more, see _product).
SIZES: tuple[tuple[str, float], ...] = (("compact", 0.8), ("standard", 1.0), ("large", 1.25),
                                         ("oversized", 1.55))
MIN_PRICE, MAX_PRICE = 5.0, 999.0
NOISE_SIGMA = 0.12
SPLIT_SIZES = {"train": 4000, "validation": 500, "test": 500}


@dataclass(frozen=True)
class Category:
    name: str
    base: float  # dollars for a standard-size, standard-brand, factor-1 product
    weight: float  # typical weight in lbs
    label: str  # what "material" is called in spec-sheet style sentences
    nouns: tuple[tuple[str, float], ...]
    brands: tuple[tuple[str, str], ...]  # (name, tier)
    materials: tuple[tuple[str, float], ...]
    features: tuple[tuple[str, float], ...]  # (phrase, dollars added)
    uses: tuple[str, ...]


CATALOG: tuple[Category, ...] = (
    Category("electronics", 55, 1.5, "Finish",
        (("headphones", 1.0), ("bluetooth speaker", 0.9), ("smartwatch", 1.6), ("webcam", 0.7),
         ("portable charger", 0.5), ("tablet", 3.0), ("monitor", 2.8)),
        (("Voltrex", "premium"), ("Sonique", "premium"), ("Circuit", "standard"), ("Zapp", "budget"),
         ("Budgetron", "budget")),
        (("plastic", 0.85), ("brushed aluminum", 1.2), ("recycled plastic", 0.9), ("glass", 1.1)),
        (("noise cancelling", 45), ("a 20 hour battery", 20), ("Bluetooth 5.3", 10),
         ("water resistance", 15), ("fast charging", 12), ("a voice assistant", 25), ("touch controls", 10)),
        ("for work and travel", "for gaming and streaming", "for daily commutes", "for home offices")),
    Category("kitchen", 35, 3.0, "Material",
        (("blender", 1.4), ("chef knife", 0.8), ("frying pan", 0.9), ("coffee maker", 1.6),
         ("cutting board", 0.4), ("stand mixer", 3.0), ("kettle", 0.8)),
        (("Culinara", "premium"), ("Maison Chef", "premium"), ("HomeCook", "standard"),
         ("KitchenEase", "budget"), ("Basix", "budget")),
        (("stainless steel", 1.2), ("cast iron", 1.15), ("nonstick aluminum", 1.0), ("bamboo", 0.85),
         ("ceramic", 1.05), ("plastic", 0.75)),
        (("dishwasher safe parts", 5), ("induction compatibility", 12), ("a programmable timer", 18),
         ("a 5 year warranty", 15), ("BPA free materials", 4), ("a digital display", 14)),
        ("for busy weeknights", "for home cooks", "for small kitchens", "for weekend baking")),
    Category("tools", 45, 4.0, "Material",
        (("cordless drill", 1.6), ("hammer", 0.4), ("socket set", 1.2), ("circular saw", 2.2),
         ("tape measure", 0.25), ("tool box", 0.8), ("impact driver", 1.8)),
        (("Ironclad", "premium"), ("ProForge", "premium"), ("Workmate", "standard"), ("HandyCo", "budget"),
         ("ToolBasics", "budget")),
        (("hardened steel", 1.2), ("chrome vanadium", 1.25), ("fiberglass", 1.0), ("plastic", 0.75),
         ("forged steel", 1.2)),
        (("a brushless motor", 40), ("two batteries", 35), ("an LED work light", 8), ("a carrying case", 10),
         ("a lifetime warranty", 20), ("a magnetic tip", 4)),
        ("for home repairs", "for professional contractors", "for weekend projects", "for the garage")),
    Category("toys", 20, 1.5, "Material",
        (("building set", 1.5), ("plush bear", 0.6), ("remote control car", 1.8), ("puzzle", 0.5),
         ("dollhouse", 2.5), ("board game", 1.0), ("train set", 2.0)),
        (("Wonderly", "premium"), ("PlayCraft", "premium"), ("FunTime", "standard"), ("Toyzo", "budget"),
         ("KidsMart", "budget")),
        (("wood", 1.2), ("plastic", 0.85), ("soft fabric", 0.9), ("cardboard", 0.6),
         ("recycled plastic", 0.95)),
        (("a rechargeable battery", 12), ("sound effects", 8), ("500 pieces", 10), ("a storage bag", 3),
         ("glow in the dark parts", 5), ("bright colors", 0)),
        ("for ages 3 and up", "for family game night", "for curious kids", "for birthday gifts")),
    Category("furniture", 80, 25.0, "Material",
        (("office chair", 1.3), ("bookshelf", 0.9), ("coffee table", 1.0), ("sofa", 3.5), ("bed frame", 2.4),
         ("desk", 1.5), ("bar stool", 0.5)),
        (("Nordhaus", "premium"), ("Oakmont", "premium"), ("Livewell", "standard"), ("FlatPak", "budget"),
         ("HomeBasic", "budget")),
        (("solid oak", 1.4), ("walnut veneer", 1.25), ("engineered wood", 0.8), ("metal", 0.95),
         ("velvet", 1.2), ("leather", 1.5)),
        (("easy assembly", 0), ("adjustable height", 40), ("built in storage", 35),
         ("stain resistant fabric", 25), ("a 10 year warranty", 30)),
        ("for living rooms", "for home offices", "for small apartments", "for the bedroom")),
    Category("sports", 40, 5.0, "Material",
        (("yoga mat", 0.5), ("tennis racket", 1.4), ("dumbbell set", 1.6), ("hiking backpack", 1.5),
         ("bicycle helmet", 1.0), ("soccer ball", 0.5), ("camping tent", 2.5)),
        (("Apex", "premium"), ("Summit Pro", "premium"), ("ActiveLine", "standard"), ("SportyGo", "budget"),
         ("FitBasics", "budget")),
        (("carbon fiber", 1.6), ("nylon", 0.95), ("rubber", 0.85), ("foam", 0.8), ("aluminum", 1.2),
         ("polyester", 0.9)),
        (("an ultralight design", 20), ("waterproof seams", 18), ("breathable mesh", 8),
         ("a carrying strap", 3), ("reflective trim", 4)),
        ("for outdoor adventures", "for home workouts", "for weekend athletes", "for training sessions")),
    Category("beauty", 18, 0.6, "Material",
        (("hair dryer", 2.5), ("face serum", 1.0), ("makeup brush set", 1.2), ("electric shaver", 2.8),
         ("perfume", 2.2), ("moisturizer", 0.9), ("curling iron", 2.0)),
        (("Lumiere", "premium"), ("Velvetine", "premium"), ("PureGlow", "standard"), ("GlamGo", "budget"),
         ("BeautyBasics", "budget")),
        (("ceramic", 1.1), ("plastic", 0.85), ("glass", 1.1), ("bamboo", 1.0), ("titanium", 1.3)),
        (("a fragrance free formula", 0), ("vitamin C", 6), ("a travel case", 5),
         ("cruelty free testing", 3), ("ionic technology", 15), ("three heat settings", 8)),
        ("for daily routines", "for sensitive skin", "for travel", "for salon results at home")),
    Category("garden", 40, 8.0, "Material",
        (("garden hose", 0.7), ("lawn mower", 6.0), ("pruning shears", 0.5), ("raised bed", 1.5),
         ("leaf blower", 3.0), ("planter", 0.6), ("wheelbarrow", 2.0)),
        (("Greenhaven", "premium"), ("TerraPro", "premium"), ("YardWorks", "standard"),
         ("GrowEasy", "budget"), ("GardenBasics", "budget")),
        (("galvanized steel", 1.15), ("cedar", 1.25), ("plastic", 0.75), ("terracotta", 0.9),
         ("aluminum", 1.05), ("rubber", 0.9)),
        (("rust resistance", 8), ("cordless operation", 45), ("UV protection", 6), ("a foldable frame", 10),
         ("self watering", 15)),
        ("for backyard gardens", "for patios and decks", "for large lawns", "for vegetable beds")),
    Category("books", 14, 1.2, "Binding",
        (("cookbook", 1.3), ("novel", 0.8), ("travel guide", 1.0), ("art book", 2.2), ("picture book", 0.7),
         ("textbook", 4.0), ("journal", 0.6)),
        (("Atlas Press", "premium"), ("Folio House", "premium"), ("Riverside Books", "standard"),
         ("PageTurner", "budget"), ("Penny Press", "budget")),
        (("hardcover", 1.3), ("paperback", 0.7), ("leather bound", 1.9), ("spiral bound", 0.9)),
        (("full color photos", 8), ("a signed first page", 25), ("a bestseller badge", 3), ("an index", 0),
         ("large print", 4)),
        ("for curious readers", "for students", "for gift giving", "for book clubs")),
    Category("automotive", 35, 4.0, "Material",
        (("car battery", 3.0), ("floor mat set", 1.0), ("dash cam", 2.0), ("tire inflator", 1.5),
         ("seat cover set", 1.4), ("jump starter", 2.5), ("wiper blades", 0.5)),
        (("Motorline", "premium"), ("Torque Pro", "premium"), ("RoadReady", "standard"),
         ("AutoValue", "budget"), ("DriveBasics", "budget")),
        (("rubber", 0.9), ("synthetic leather", 1.2), ("plastic", 0.8), ("steel", 1.1), ("neoprene", 1.0)),
        (("universal fit", 5), ("an LCD display", 15), ("a 2 year warranty", 10), ("heavy duty clamps", 12),
         ("easy installation", 0)),
        ("for cars and trucks", "for road trips", "for daily drivers", "for winter weather")),
)
# fmt: on

# Brand-neutral series names: realistic distractors that carry no price signal.
SERIES = ("Aria", "Nova", "Edge", "Flex", "Prime", "Classic", "Vista", "Orbit", "Echo", "Terra")
FILLERS = (
    "Ships in recyclable packaging.",
    "A thoughtful gift idea.",
    "Backed by friendly customer support.",
    "Customers praise its reliable performance.",
    "Available in several colors.",
    "Easy to clean and store.",
    "Rated highly by verified buyers.",
    "Comes ready to use out of the box.",
)
# Sentence shapes; {features} is a natural-language list of one to three features.
TEMPLATES = (
    "{Brand} {series} {material} {noun}. {Size} size, weighs {weight} lbs. Features {features}. "
    "Designed {use}. {filler}",
    "The {Brand} {series} is {a_size} {material} {noun} built {use}. It offers {features} and weighs "
    "{weight} lbs. {filler}",
    "Looking for a {noun} {use}? This {size} model from {Brand} comes with {features}. {label}: "
    "{material}. Weight: {weight} lbs. {filler}",
    "{Features} {make} the {Brand} {series} {noun} a smart choice {use}. {Size} {material} design, "
    "{weight} lbs. {filler}",
    "{Brand} presents the {series} {noun} {use}: {material}, {size} size, {weight} lbs. Highlights include "
    "{features}. {filler}",
    "Made by {Brand}, this {material} {noun} ({size}, {weight} lbs) is designed {use}. Key features: "
    "{features}. {filler}",
)


def _pick(rng: random.Random, items: tuple[T, ...] | list[T]) -> T:
    # rng.random() rather than rng.choice(): choice's algorithm is not promised to stay the same.
    return items[int(rng.random() * len(items))]


def _normal(rng: random.Random) -> float:
    """Box-Muller on rng.random(), for the same reason as _pick."""
    u1, u2 = rng.random(), rng.random()
    return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)


def _fillers(rng: random.Random) -> str:
    """One or two closing sentences that carry no price signal (real listings are full of them)."""
    first = _pick(rng, FILLERS)
    if rng.random() < 0.5:
        return first
    second = _pick(rng, FILLERS)
    return first if second == first else f"{first} {second}"


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _product(rng: random.Random) -> dict[str, Any]:
    cat = _pick(rng, CATALOG)
    noun, noun_factor = _pick(rng, cat.nouns)
    brand, tier = _pick(rng, cat.brands)
    material, material_factor = _pick(rng, cat.materials)
    size, size_factor = _pick(rng, SIZES)
    n_features = 1 + int(rng.random() * 3)
    pool = list(cat.features)
    features = []
    for _ in range(n_features):  # sample without replacement
        features.append(pool.pop(int(rng.random() * len(pool))))
    weight = cat.weight * math.sqrt(noun_factor) * size_factor**1.5 * (0.85 + 0.3 * rng.random())

    # The hidden formula: multiplicative core, additive feature extras, multiplicative noise.
    core = cat.base * noun_factor * TIERS[tier] * size_factor * material_factor
    raw = (core + sum(add for _, add in features)) * math.exp(NOISE_SIGMA * _normal(rng))
    price = float(round(min(MAX_PRICE, max(MIN_PRICE, raw))))

    template = _pick(rng, TEMPLATES)
    phrases = [f for f, _ in features]
    text = template.format(
        Brand=brand,
        series=_pick(rng, SERIES),
        material=material,
        noun=noun,
        size=size,
        Size=size.capitalize(),
        weight=f"{weight:.1f}",
        features=_join(phrases),
        Features=_join(phrases)[0].upper() + _join(phrases)[1:],
        use=_pick(rng, cat.uses),
        label=cat.label,
        a_size=("an " if size[0] in "aeiou" else "a ") + size,
        make="makes" if len(phrases) == 1 else "make",
        filler=_fillers(rng),
    ).strip()
    return {"text": text, "price": price, "category": cat.name, "brand": brand, "tier": tier}


def generate_products(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` products as dicts with `text`, `price` (whole dollars, float), `category`, `brand`, `tier`.

    `brand` and `tier` are the hidden features, kept for tests and analysis; the task sees only `text`.
    """
    rng = random.Random(seed)
    return [_product(rng) for _ in range(n)]


def pricer_splits(seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Fixed train/validation/test splits (4000/500/500), identical on every run and machine."""
    rows = generate_products(sum(SPLIT_SIZES.values()), seed)
    out: dict[str, list[dict[str, Any]]] = {}
    start = 0
    for name, size in SPLIT_SIZES.items():
        out[name] = rows[start : start + size]
        start += size
    return out
