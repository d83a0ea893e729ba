"""Stage 2, `clean/<source>`: normalisation, HTML stripping, language ID and heuristic quality filters.

Public API: `CleanConfig`, `clean_table(table, cfg, stats)`, `clean_batches(batches, cfg, stats)`,
`active_rule_names(cfg)`, `RULE_NAMES`. No Dagster here; the assets call `clean_table` per shard in a worker.
"""

from plasma_pipeline.clean.config import CleanConfig
from plasma_pipeline.clean.rules import RULE_NAMES
from plasma_pipeline.clean.stage import active_rule_names, clean_batches, clean_table

__all__ = ["RULE_NAMES", "CleanConfig", "active_rule_names", "clean_batches", "clean_table"]
