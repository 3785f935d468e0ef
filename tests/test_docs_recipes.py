"""docs/recipes.md documents every recipe key: one table row per `section.key`, with the default the code
has, and the value recipes/imagenet64.yaml and recipes/quickstart.yaml set wherever it differs from it.

The keys come from the dataclasses (dataclasses.fields of Recipe and of each section), so a key added to
dsmctl/recipe.py without a row in the reference fails here.
"""
import dataclasses
import re
import typing
from pathlib import Path

import yaml

from dsmctl.recipe import Recipe, load_recipe

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "recipes.md"
SET_BY = ("imagenet64", "quickstart")  # recipes whose differences from the defaults the tables state
COLUMNS = ("key", "type", "default", "allowed values / constraint", "what it does", "set by")


def recipe_keys():
    """{'optim.lr': default, ...} for every field of every section, defaults as in the resolved recipe."""
    defaults = Recipe().to_dict()
    hints = typing.get_type_hints(Recipe)
    keys = {}
    for section in dataclasses.fields(Recipe):
        for f in dataclasses.fields(hints[section.name]):
            keys[f"{section.name}.{f.name}"] = defaults[section.name][f.name]
    return keys


def doc_rows():
    """{'optim.lr': [cells]} for every table row of docs/recipes.md whose first cell is `section.key`."""
    rows, repeated = {}, []
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*`(\w+\.\w+)`\s*\|", line)
        if not m:
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        if m.group(1) in rows:
            repeated.append(m.group(1))
        rows[m.group(1)] = cells
    assert not repeated, f"docs/recipes.md documents these keys twice: {repeated}"
    return rows


def yaml_value(cell):
    """The first `code` span of a cell, read as YAML (as a recipe file would read it)."""
    m = re.search(r"`([^`]*)`", cell)
    assert m, f"no `value` in {cell!r}"
    return yaml.safe_load(m.group(1))


def same(a, b):
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def test_every_recipe_key_has_a_row():
    keys, rows = recipe_keys(), doc_rows()
    assert len(keys) > 40  # the dataclasses were found
    missing = [k for k in keys if k not in rows]
    assert not missing, f"recipe keys without a row in docs/recipes.md: {missing}"
    text = DOC.read_text()
    for key in keys:
        assert f"`{key}`" in text


def test_every_row_is_a_recipe_key_with_all_columns():
    keys, rows = recipe_keys(), doc_rows()
    stale = [k for k in rows if k not in keys]
    assert not stale, f"docs/recipes.md documents keys the recipe does not have: {stale}"
    for key, cells in rows.items():
        assert len(cells) == len(COLUMNS), f"{key}: {len(cells)} cells, expected {len(COLUMNS)} ({', '.join(COLUMNS)})"
        assert cells[1] and cells[4], f"{key}: empty type or description"
    for line in DOC.read_text().splitlines():
        if line.startswith("| key |"):
            assert [c.strip() for c in line.strip()[1:-1].split("|")] == list(COLUMNS), line


def test_documented_defaults_are_the_code_defaults():
    rows = doc_rows()
    wrong = {k: (rows[k][2], default) for k, default in recipe_keys().items()
             if k in rows and not same(yaml_value(rows[k][2]), default)}  # missing rows: the first test
    assert not wrong, f"docs/recipes.md default (documented, in the code): {wrong}"


def test_set_by_column_states_every_difference_from_the_default():
    keys, rows = recipe_keys(), doc_rows()
    for name in SET_BY:
        resolved = load_recipe(ROOT / "recipes" / f"{name}.yaml").to_dict()
        for key, default in keys.items():
            if key not in rows:  # reported by test_every_recipe_key_has_a_row
                continue
            section, field = key.split(".")
            value = resolved[section][field]
            m = re.search(rf"\b{name}: (`[^`]*`)", rows[key][5])
            if same(value, default):
                assert m is None, f"{key}: docs/recipes.md says {name} sets {m.group(1)}, but it uses the default"
            else:
                assert m is not None, f"{key}: {name}.yaml sets {value!r} (default {default!r}); say so in 'set by'"
                assert same(yaml_value(m.group(1)), value), f"{key}: documented {m.group(1)} for {name}, it sets {value!r}"
