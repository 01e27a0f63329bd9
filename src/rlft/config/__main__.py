"""``python -m rlft.config > docs/recipes.md``: the recipe reference, generated from the fields."""

from rlft.config.recipe import reference_markdown

print(reference_markdown(), end="")
