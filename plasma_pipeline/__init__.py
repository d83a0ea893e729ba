"""plasma-pipeline: raw text to a chat model, as Dagster assets over Parquet shards.

Kept import-free on purpose: `python -m plasma_pipeline.train` must start on a GPU box that has no Dagster.
"""
