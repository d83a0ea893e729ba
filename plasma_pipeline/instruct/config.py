"""Configs of the instructions and sft_shards stages (built by the recipe loader from their YAML sections).

instructions:
  generators: [wiki, recipes, dialog, code]   # templated generators that are on
  max_per_generator: 5000
  seed: 0
  sources_root: null                          # offline corpora folder for the file fallback
  source_domains: {wiki: wiki, recipes: recipes, dialog: dialog, code: code}   # DOC source -> generator
  datasets:                                   # chat datasets in the messages format, same path
    - {name: my_chats, kind: local, data_files: [data/chats.jsonl], messages_field: messages, max_docs: 1000}
    - {name: hub_chats, kind: hf, path: HuggingFaceH4/no_robots, split: train, max_docs: 2000}
  decontam_ngram: 13
  decontam_short_ngram: 8
  eval_per_domain: 8

sft_shards:
  seq_len: 512
  pack: true
  val_fraction: 0.05
  seed: 0
  rows_per_shard: 2048
  too_long: truncate
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GENERATORS = ("wiki", "recipes", "dialog", "code")
DATASET_KINDS = ("hf", "local")
TOO_LONG_POLICIES = ("truncate", "drop")


def _pos_int(value: Any, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")


@dataclass
class MessagesDatasetConfig:
    """One chat dataset in the messages format (a list of {role, content} per record), read through `datasets`."""

    # Label used as the instruction `source` and in the counters (kept/<name>).
    name: str
    # hf: datasets.load_dataset(path, name=config, split, streaming); local: jsonl / parquet files given in data_files.
    kind: str = "local"
    # Hub dataset id or builder ("json", "parquet") for kind hf; ignored for local (picked from the extension).
    path: str | None = None
    # Dataset config name for kind hf.
    config: str | None = None
    # Split to read.
    split: str = "train"
    # Files (paths / globs) for the json / parquet builders; required for kind local. A string is one file.
    data_files: list[str] | str | None = None
    # Record field holding the list of messages.
    messages_field: str = "messages"
    # Read at most this many records (null = all).
    max_docs: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(f"datasets.name: expected a non-empty string without '/', got {self.name!r}")
        if self.kind not in DATASET_KINDS:
            raise ValueError(f"datasets.kind: expected one of {', '.join(DATASET_KINDS)}, got {self.kind!r}")
        if isinstance(self.data_files, str):
            self.data_files = [self.data_files]
        if self.kind == "local" and not self.data_files:
            raise ValueError(f"datasets.data_files: required for local dataset {self.name!r}")
        if self.kind == "hf" and not self.path:
            raise ValueError(f"datasets.path: required for hf dataset {self.name!r}")
        if not isinstance(self.messages_field, str) or not self.messages_field:
            raise ValueError(f"datasets.messages_field: expected a non-empty string, got {self.messages_field!r}")
        _pos_int(self.max_docs, "datasets.max_docs", allow_none=True)


@dataclass
class InstructionsConfig:
    """Stage 9: templated instructions from the structured sources, chat datasets, decontamination."""

    # Templated generators that are on (wiki title -> summary, recipe -> steps, dialog -> chat, code -> docstring).
    generators: list[str] = field(default_factory=lambda: list(GENERATORS))
    # Most instructions kept per generator and per dataset (null = no limit).
    max_per_generator: int | None = 5000
    # Seed of the template choice (phrasing variety); the choice is per item, so it is stable across shards.
    seed: int = 0
    # Offline corpora folder for the file fallback and the eval battery (null = $PLASMA_SOURCES or data/sources).
    sources_root: str | None = None
    # DOC-table source name -> generator it feeds (sources not listed are matched by equal name).
    source_domains: dict[str, str] = field(default_factory=dict)
    # Chat datasets in the messages format: each a mapping with MessagesDatasetConfig's fields.
    datasets: list[dict[str, Any]] = field(default_factory=list)
    # Word n-gram size for decontamination against long eval texts (wiki extracts, recipe steps, code, passages).
    decontam_ngram: int = 13
    # Word n-gram size against short eval texts (chat turns, docstrings), where 13-grams would see nothing.
    decontam_short_ngram: int = 8
    # Eval texts with at least this many words are long (use decontam_ngram).
    decontam_long_min_words: int = 30
    # Eval texts shorter than decontam_short_ngram but with at least this many words are matched as whole messages.
    decontam_min_words: int = 3
    # Prompts per domain in the held-out battery (must match what the evaluation stage uses).
    eval_per_domain: int = 8
    # Instructions per yielded table.
    batch_size: int = 2000

    def __post_init__(self) -> None:
        if not isinstance(self.generators, list) or any(g not in GENERATORS for g in self.generators):
            raise ValueError(f"generators: expected a list of {', '.join(GENERATORS)}, got {self.generators!r}")
        _pos_int(self.max_per_generator, "max_per_generator", allow_none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed: expected an integer, got {self.seed!r}")
        if self.sources_root is not None and (not isinstance(self.sources_root, str) or not self.sources_root):
            raise ValueError(f"sources_root: expected a non-empty string or null, got {self.sources_root!r}")
        if not isinstance(self.source_domains, dict) or any(v not in GENERATORS for v in self.source_domains.values()):
            raise ValueError(f"source_domains: expected a mapping source -> one of {', '.join(GENERATORS)}, "
                             f"got {self.source_domains!r}")
        if not isinstance(self.datasets, list):
            raise ValueError(f"datasets: expected a list of mappings, got {self.datasets!r}")
        names = set()
        for d in self.datasets:
            if not isinstance(d, dict):
                raise ValueError(f"datasets: expected a mapping per dataset, got {d!r}")
            try:
                spec = MessagesDatasetConfig(**d)
            except TypeError as e:
                raise ValueError(f"datasets: {e}") from e
            if spec.name in names or spec.name in GENERATORS:
                raise ValueError(f"datasets.name: {spec.name!r} is used twice or clashes with a generator")
            names.add(spec.name)
        for name in ("decontam_ngram", "decontam_short_ngram", "decontam_long_min_words", "decontam_min_words"):
            _pos_int(getattr(self, name), name)
        if not (self.decontam_min_words <= self.decontam_short_ngram <= self.decontam_ngram
                <= self.decontam_long_min_words):
            raise ValueError("decontam_ngram: sizes must satisfy decontam_min_words <= decontam_short_ngram <= "
                             "decontam_ngram <= decontam_long_min_words")
        _pos_int(self.eval_per_domain, "eval_per_domain")
        _pos_int(self.batch_size, "batch_size")

    def dataset_configs(self) -> list[MessagesDatasetConfig]:
        return [MessagesDatasetConfig(**d) for d in self.datasets]

    def domain_of(self, source: str) -> str | None:
        """The generator that a DOC source feeds, or None when it feeds none."""
        if source in self.source_domains:
            return self.source_domains[source]
        return source if source in GENERATORS else None


@dataclass
class SFTShardConfig:
    """Stage 10: chat-template rendering, loss masks, packing into fixed-length SFT rows."""

    # Tokens per training row is seq_len + 1 (inputs row[:-1], targets row[1:]).
    seq_len: int = 512
    # Pack several whole conversations of one source per row (true) or one conversation per padded row (false).
    pack: bool = True
    # Share of conversations written to the validation split (chosen by a hash of id and seed).
    val_fraction: float = 0.05
    # Seed of the train/val split and of the row shuffle.
    seed: int = 0
    # Rows per written shard.
    rows_per_shard: int = 2048
    # Rows held in the shuffle buffer before shards are written (memory bound: rows * (seq_len + 1) * 5 bytes).
    shuffle_buffer_rows: int = 8192
    # Conversations longer than seq_len + 1 tokens: truncate (kept if a trained token survives) or drop.
    too_long: str = "truncate"

    def __post_init__(self) -> None:
        _pos_int(self.seq_len, "seq_len")
        if self.seq_len < 8:
            raise ValueError(f"seq_len: expected at least 8, got {self.seq_len}")
        if not isinstance(self.pack, bool):
            raise ValueError(f"pack: expected true or false, got {self.pack!r}")
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) \
                or not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction: expected a number in [0, 1), got {self.val_fraction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed: expected an integer, got {self.seed!r}")
        _pos_int(self.rows_per_shard, "rows_per_shard")
        _pos_int(self.shuffle_buffer_rows, "shuffle_buffer_rows")
        if self.too_long not in TOO_LONG_POLICIES:
            raise ValueError(f"too_long: expected one of {', '.join(TOO_LONG_POLICIES)}, got {self.too_long!r}")
