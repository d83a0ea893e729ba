"""Mixture search by experiment (RegMix style): proxy models on sampled mixtures, a regression from weights to
per-domain val bits-per-byte, and the predicted best mix. Plain Python; the Dagster layer is
defs/mix_search_assets.py."""

from plasma_pipeline.mix_search.config import MixSearchConfig, ObjectiveConfig, SampleConfig
from plasma_pipeline.mix_search.variants import variant_version, variant_weights

__all__ = ["MixSearchConfig", "ObjectiveConfig", "SampleConfig", "variant_version", "variant_weights"]
