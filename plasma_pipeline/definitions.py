"""The code location: one Definitions object built from the recipe that PLASMA_RECIPE names."""

from plasma_pipeline.defs import build_defs
from plasma_pipeline.recipe import load_recipe

defs = build_defs(load_recipe())
