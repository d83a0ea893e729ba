"""The code location: one Definitions object built from the recipe that PLASMA_RECIPE names."""

from plasma_pipeline.defs import build_defs
from plasma_pipeline.defs.cluster import with_executor
from plasma_pipeline.recipe import load_recipe

# The steps run where the environment says (defs/cluster.py): local processes, or Kubernetes pods.
defs = with_executor(build_defs(load_recipe()))
