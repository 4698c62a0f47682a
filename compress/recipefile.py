"""Recipe files: a chosen variant written as data (``python -m bench search`` writes them,
``python -m compress build --recipe-file`` replays them). A variant name of a registered family
plus the fine-tune length it was chosen with, and the evidence of the choice; never code, so a
recipe file from anywhere is safe to read: it can only name recipes this install already has."""
from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError

RECIPE_FILE_KIND = "resnet18-bench-recipe"
RECIPE_FILE_VERSION = 1


def load_recipe_file(path: Path) -> dict:
    """The validated document: kind, version, a variant name this install resolves, and a
    fine-tune length (number or null). One UserError naming the file for anything else."""
    from .registry import get_recipe

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such recipe file; `python -m bench search ... -o FILE` writes one") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable recipe file ({e})") from None
    if not isinstance(doc, dict) or doc.get("kind") != RECIPE_FILE_KIND:
        raise UserError(f"{path}: not a recipe file (kind is not {RECIPE_FILE_KIND!r})")
    if doc.get("version") != RECIPE_FILE_VERSION:
        raise UserError(f"{path}: recipe file version {doc.get('version')!r}; this install reads version "
                        f"{RECIPE_FILE_VERSION}: run the search again with it")
    variant, epochs = doc.get("variant"), doc.get("finetune_epochs")
    if not isinstance(variant, str) or not variant:
        raise UserError(f"{path}: 'variant' must be a variant name")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs < 0):
        raise UserError(f"{path}: 'finetune_epochs' must be a number >= 0 or null")
    get_recipe(variant)  # unknown names fail here, with the list of registered ones
    return doc
