"""Column layouts shared by the data stages.

Every document-level asset (raw, clean, scored, deduped) is a table with at least DOC_SCHEMA's columns;
later stages append their own columns (clean: lang, lang_score; scored: quality, toxicity).
"""

import pyarrow as pa

DOC_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        # Free-form per-collector metadata, JSON-encoded so the schema stays fixed across sources.
        pa.field("meta", pa.string()),
    ]
)
CLEAN_COLUMNS = [pa.field("lang", pa.string()), pa.field("lang_score", pa.float32())]
SCORE_COLUMNS = [pa.field("quality", pa.float32()), pa.field("toxicity", pa.float32())]
CLEAN_SCHEMA = pa.schema(list(DOC_SCHEMA) + CLEAN_COLUMNS)
SCORED_SCHEMA = pa.schema(list(CLEAN_SCHEMA) + SCORE_COLUMNS)

# Token shards (pretrain_shards, sft_shards): one row per packed sequence of seq_len + 1 tokens;
# the trainer reads inputs = row[:-1], targets = row[1:]. SFT rows add loss_mask (1 = trained as a target).
TOKEN_SCHEMA = pa.schema([pa.field("input_ids", pa.list_(pa.int32())), pa.field("domain", pa.string())])
SFT_SCHEMA = pa.schema(list(TOKEN_SCHEMA) + [pa.field("loss_mask", pa.list_(pa.uint8()))])

# Chat special tokens, reserved in the tokenizer as user-defined symbols. SentencePiece ids:
# pad=0, unk=1, bos=2, eos=3; these follow in this order.
CHAT_SPECIAL_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
