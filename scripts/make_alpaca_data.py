"""Write data/alpaca-products.json: Alpaca-style instruction/input/output rows for sweeps/alpaca-text.yaml.

Offline and deterministic: the inputs are product descriptions from harness.builtin.pricer_data, and every
answer can be read off the text exactly (brand, category, material, product type, a short summary), so
even the tiny builtin model can learn something in a few steps.
Regenerate: .venv/bin/python scripts/make_alpaca_data.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from harness.builtin.pricer_data import CATALOG, generate_products

ROOT = Path(__file__).resolve().parents[1]
N_PRODUCTS = 100
SEED = 2024

INSTRUCTIONS = {
    "brand": "Name the brand.",
    "category": "What category is this?",
    "material": "List the material.",
    "noun": "What kind of product is this?",
    "summary": "Summarise the product in a few words.",
}


def _longest_in(text: str, options: list[str]) -> str | None:
    found = [o for o in options if o in text]
    return max(found, key=len) if found else None


def rows() -> list[dict[str, str]]:
    by_name = {c.name: c for c in CATALOG}
    out = []
    for p in generate_products(N_PRODUCTS, SEED):
        cat = by_name[p["category"]]
        text = p["text"]
        noun = _longest_in(text, [n for n, _ in cat.nouns])
        material = _longest_in(text, [m for m, _ in cat.materials])
        answers = {"brand": p["brand"], "category": p["category"], "material": material, "noun": noun}
        if noun:
            answers["summary"] = f"{p['brand']} {noun}"
        # Every question about every product: the model has to read the instruction to answer.
        for k, instruction in INSTRUCTIONS.items():
            if answers.get(k):
                out.append({"instruction": instruction, "input": text, "output": answers[k]})
    return out


def main(path: Path = ROOT / "data" / "alpaca-products.json") -> int:
    data = rows()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"{len(data)} rows -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
