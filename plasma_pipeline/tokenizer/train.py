"""Stage 6: train a SentencePiece BPE tokenizer (byte fallback, reserved chat tokens) on a domain-balanced sample.

Sampling is deterministic and streaming with bounded memory: each document gets a seeded 64-bit hash of its id,
and per domain we keep the lowest-hash documents (a bounded max-heap of hashes and file offsets; the texts of the
candidates go to a spill file in the work dir) until the domain's character budget is filled. The budget is split
across domains by `sample_weights` (equal when empty), so a small domain is not drowned by a big one; a domain
with fewer characters than its share contributes all it has (no redistribution, visible in the metadata). One
document in EVAL_EVERY (by a second id hash) is never trained on; the lowest-hash of those, up to
`eval_chars_per_domain` per domain, measure bytes per token per domain on held-out text.

The sample is streamed to a text file in the work dir (domains interleaved document by document, one training
line per line), and SentencePiece reads that file with `input_sentence_size` set to its line count: memory is
bounded by `sample_chars`, never by the corpus. (HF `tokenizers` BPE was measured on the same sample with the same
piece constraints: within 2% bytes per token on every domain, but slower to train; see benchmarks/tokenize_bench.py.)
"""

from __future__ import annotations

import hashlib
import heapq
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from plasma_pipeline.schema import CHAT_SPECIAL_TOKENS

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
FIRST_SPECIAL_ID = 4
EVAL_EVERY = 8  # one document in 8 (by seeded id hash) may be held out for the bytes-per-token measure


@dataclass
class TokenizerConfig:
    vocab_size: int = 8192  # final vocabulary size, incl. pad/unk/bos/eos, chat tokens and 256 byte pieces
    sample_chars: int = 20_000_000  # total characters of training sample, split across domains by sample_weights
    sample_weights: dict[str, float] = field(default_factory=dict)  # domain -> share of sample_chars; empty = equal
    eval_chars_per_domain: int = 200_000  # held-out characters per domain for the bytes-per-token metadata
    character_coverage: float = 0.9995  # share of characters covered by pieces; the rest go to byte fallback
    byte_fallback: bool = True  # encode unknown characters as UTF-8 byte pieces <0x00>..<0xFF> instead of <unk>
    model_type: str = "bpe"  # SentencePiece model type: bpe or unigram
    split_digits: bool = True  # every digit is its own piece (LLaMA style)
    seed: int = 0  # seed of the document sample hash
    num_threads: int = 2  # trainer / encoder threads
    max_sentence_length: int = 4192  # bytes; longer training lines are cut into chunks of at most this size

    def __post_init__(self) -> None:
        if not isinstance(self.vocab_size, int) or self.vocab_size < FIRST_SPECIAL_ID + len(CHAT_SPECIAL_TOKENS) + 1:
            raise ValueError(f"tokenizer.vocab_size: must be an int > {FIRST_SPECIAL_ID + len(CHAT_SPECIAL_TOKENS)}")
        if self.byte_fallback and self.vocab_size < 256 + FIRST_SPECIAL_ID + len(CHAT_SPECIAL_TOKENS) + 1:
            raise ValueError("tokenizer.vocab_size: with byte_fallback it must exceed 256 byte pieces + 8 reserved")
        if self.vocab_size > 2**31 - 1:
            raise ValueError("tokenizer.vocab_size: must fit int32")
        if self.sample_chars <= 0:
            raise ValueError(f"tokenizer.sample_chars: must be > 0, got {self.sample_chars}")
        for d, w in self.sample_weights.items():
            if not isinstance(w, (int, float)) or w < 0:
                raise ValueError(f"tokenizer.sample_weights.{d}: must be a number >= 0, got {w!r}")
        if self.sample_weights and sum(self.sample_weights.values()) <= 0:
            raise ValueError("tokenizer.sample_weights: all weights are zero")
        if self.eval_chars_per_domain < 0:
            raise ValueError(f"tokenizer.eval_chars_per_domain: must be >= 0, got {self.eval_chars_per_domain}")
        if not 0.9 <= self.character_coverage <= 1.0:
            raise ValueError(f"tokenizer.character_coverage: must be in [0.9, 1], got {self.character_coverage}")
        if self.model_type not in ("bpe", "unigram"):
            raise ValueError(f"tokenizer.model_type: must be 'bpe' or 'unigram', got {self.model_type!r}")
        if self.num_threads < 1:
            raise ValueError(f"tokenizer.num_threads: must be >= 1, got {self.num_threads}")
        if self.max_sentence_length < 64:
            raise ValueError(f"tokenizer.max_sentence_length: must be >= 64, got {self.max_sentence_length}")


def doc_hash(seed: int | str, tag: str, doc_id: str) -> int:
    """Seeded 64-bit hash of a document id; stable across processes and Python versions."""
    h = hashlib.blake2b(f"{seed}\x1f{tag}\x1f{doc_id}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


# --- loading -------------------------------------------------------------------------------------------------

_SP_CACHE: dict[tuple[str, float], object] = {}


def load_tokenizer(path: str | os.PathLike):
    """SentencePieceProcessor for `path`, loaded once per process (cache keyed by path and mtime)."""
    import sentencepiece as spm

    p = str(Path(path).resolve())
    key = (p, os.path.getmtime(p))
    sp = _SP_CACHE.get(key)
    if sp is None:
        sp = spm.SentencePieceProcessor(model_file=p)
        _SP_CACHE[key] = sp
    return sp


# --- sampling ------------------------------------------------------------------------------------------------


def _domain_budgets(domains: list[str], cfg: TokenizerConfig) -> dict[str, int]:
    if cfg.sample_weights:
        unknown = sorted(set(cfg.sample_weights) - set(domains))
        if unknown:
            raise ValueError(f"tokenizer.sample_weights: unknown domains {unknown} (domains: {sorted(domains)})")
        w = {d: float(cfg.sample_weights.get(d, 0.0)) for d in domains}
    else:
        w = {d: 1.0 for d in domains}
    total = sum(w.values())
    return {d: int(cfg.sample_chars * w[d] / total) for d in domains}


class _BottomK:
    """Lowest-hash documents whose texts add up to at least `budget` chars, texts spilled to a file.

    A max-heap on the hash holds (hash, id, file offset, bytes, chars) of the candidates; the highest-hash one is
    evicted while the rest still fill the budget, so memory stays at a few tuples per kept document whatever the
    stream length. Candidate texts are appended to `spill` (evicted ones stay there as garbage: a stream of N
    documents pushes about k(1 + ln(N / k)) of them for k kept).
    """

    def __init__(self, budget: int, spill: str | os.PathLike):
        self.budget, self.chars, self.heap = budget, 0, []  # heap of (-hash, id, offset, nbytes, nchars)
        self.path = str(spill)
        self._f = open(self.path, "wb")
        self._end = 0

    def push(self, h: int, doc_id: str, text: str) -> None:
        if self.budget <= 0 or (self.heap and self.chars >= self.budget and h > -self.heap[0][0]):
            return
        data = text.encode("utf-8")
        self._f.write(data)
        heapq.heappush(self.heap, (-h, doc_id, self._end, len(data), len(text)))
        self._end += len(data)
        self.chars += len(text)
        while self.heap and self.chars - self.heap[0][4] >= self.budget:
            self.chars -= heapq.heappop(self.heap)[4]

    def __len__(self) -> int:
        return len(self.heap)

    def texts(self) -> Iterator[str]:
        """The kept texts, lowest hash first, read back from the spill file."""
        if not self._f.closed:
            self._f.flush()
        with open(self.path, "rb") as f:
            for _, _, off, n, _ in sorted(self.heap, key=lambda x: -x[0]):
                f.seek(off)
                yield f.read(n).decode("utf-8")

    def close(self) -> None:
        self._f.close()


def _sample_domain(
    tables: Iterable[pa.Table], budget: int, eval_budget: int, seed: int, domain: str, stats: Counter,
    spill_dir: str | os.PathLike,
) -> tuple[_BottomK, _BottomK]:
    """(train sample, held-out eval docs) of one domain in one pass, texts spilled under spill_dir.

    One document in EVAL_EVERY (by a second seeded hash) is an eval candidate, the rest train candidates;
    each side takes its own lowest-hash documents up to its budget, so the two sets never overlap.
    """
    key = hashlib.blake2b(domain.encode(), digest_size=6).hexdigest()
    train = _BottomK(budget, Path(spill_dir) / f"train-{key}.txt")
    held_out = _BottomK(eval_budget, Path(spill_dir) / f"eval-{key}.txt")
    try:
        for table in tables:
            for doc_id, text in zip(table.column("id").to_pylist(), table.column("text").to_pylist()):
                stats["tokenizer/docs_seen"] += 1
                if not text:
                    continue
                side = held_out if doc_hash(seed, f"tokeval:{domain}", doc_id) % EVAL_EVERY == 0 else train
                side.push(doc_hash(seed, f"tok:{domain}", doc_id), doc_id, text)
    finally:
        train.close()
        held_out.close()
    return train, held_out


def _training_lines(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
    """Lines of the sample, with lines over `max_bytes` UTF-8 bytes cut into chunks (SentencePiece skips them)."""
    step = max(16, max_bytes // 4)  # a char is at most 4 bytes
    for text in texts:
        for line in text.split("\n"):
            if not line.strip():
                continue
            if len(line.encode("utf-8")) <= max_bytes:
                yield line
            else:
                for i in range(0, len(line), step):
                    yield line[i : i + step]


def _write_sample(samples: list[_BottomK], path: Path, max_bytes: int) -> tuple[int, int]:
    """Stream the samples to `path`, domains interleaved document by document (so the trainer never sees one
    domain as a long block), one training line per line; returns (lines, bytes)."""
    lines = nbytes = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        iters = [s.texts() for s in samples if len(s)]
        while iters:
            alive = []
            for it in iters:
                doc = next(it, None)
                if doc is not None:
                    alive.append(it)
                    for line in _training_lines([doc], max_bytes):
                        line = line.rstrip("\r")  # what SentencePiece's sentence_iterator did; its file reader won't
                        if not line:
                            continue
                        f.write(line)
                        f.write("\n")
                        lines += 1
                        nbytes += len(line.encode("utf-8")) + 1
            iters = alive
    return lines, nbytes


# --- training ------------------------------------------------------------------------------------------------


def train_tokenizer(
    domain_tables: dict[str, Iterable[pa.Table]],
    cfg: TokenizerConfig,
    out_dir: str | os.PathLike,
    stats: Counter,
    work_dir: str | os.PathLike | None = None,
) -> dict:
    """Train on a domain-balanced sample of `domain_tables`; write out_dir/tokenizer.model and .vocab.

    `domain_tables` maps a domain (source) name to an iterable of tables with at least `id` and `text`.
    The sample's spill files and the training text file go under `work_dir` (a temporary directory by default,
    removed at the end). Returns metadata: sizes of the sample per domain, bytes per token per domain on held-out
    documents, the special-token ids, and the vocabulary size.
    """
    if not domain_tables:
        raise ValueError("train_tokenizer: no domains given")
    with tempfile.TemporaryDirectory(prefix="plasma-tok-", dir=work_dir) as tmp:
        return _train(domain_tables, cfg, Path(out_dir), stats, Path(tmp))


def _train(domain_tables: dict[str, Iterable[pa.Table]], cfg: TokenizerConfig, out: Path, stats: Counter,
           tmp: Path) -> dict:
    import sentencepiece as spm
    from plasma_pipeline.tokenizer.model_proto import model_pb2
    pb = model_pb2()

    domains = sorted(domain_tables)
    budgets = _domain_budgets(domains, cfg)
    train: dict[str, _BottomK | None] = {}
    held: dict[str, _BottomK | None] = {}
    for d in domains:
        if budgets[d] <= 0:
            train[d] = held[d] = None
            continue
        tr, ev = _sample_domain(domain_tables[d], budgets[d], cfg.eval_chars_per_domain, cfg.seed, d, stats, tmp)
        train[d], held[d] = tr, ev
        stats["tokenizer/sample_docs"] += len(tr)
        stats["tokenizer/eval_docs"] += len(ev)
        stats[f"tokenizer/sample_chars/{d}"] += sum(x[4] for x in tr.heap)
    if not any(train[d] is not None and len(train[d]) for d in domains):
        raise ValueError("train_tokenizer: the sample is empty (no non-empty documents in any domain)")

    sample_path = tmp / "sample.txt"
    n_lines, n_bytes = _write_sample([train[d] for d in domains if train[d] is not None], sample_path,
                                     cfg.max_sentence_length)
    stats["tokenizer/sample_lines"] += n_lines
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / "tokenizer"

    t0 = time.perf_counter()
    spm.SentencePieceTrainer.train(
        input=str(sample_path),
        model_prefix=str(prefix),
        model_type=cfg.model_type,
        vocab_size=cfg.vocab_size,
        character_coverage=cfg.character_coverage,
        byte_fallback=cfg.byte_fallback,
        split_digits=cfg.split_digits,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        pad_piece="<pad>",
        unk_piece="<unk>",
        bos_piece="<s>",
        eos_piece="</s>",
        user_defined_symbols=list(CHAT_SPECIAL_TOKENS),
        # Keep text as is: no NFKC, no whitespace squashing (code indentation matters), whitespace-only pieces.
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        max_sentence_length=cfg.max_sentence_length,
        # The file holds the whole capped sample (sample_chars): load exactly its lines, no resampling.
        input_sentence_size=n_lines,
        shuffle_input_sentence=False,
        num_threads=cfg.num_threads,
        hard_vocab_limit=False,  # tiny samples may not support the full vocab; metadata says what was reached
        minloglevel=2,
    )
    train_s = time.perf_counter() - t0
    model_path = prefix.with_suffix(".model")
    # The model embeds its training paths; pin them so the same sample gives the same bytes in any folder.
    proto = pb.ModelProto()
    proto.ParseFromString(model_path.read_bytes())
    del proto.trainer_spec.input[:]
    proto.trainer_spec.input.append("sample.txt")
    proto.trainer_spec.model_prefix = "tokenizer"
    model_path.write_bytes(proto.SerializeToString())
    sp = spm.SentencePieceProcessor(model_file=str(model_path))

    special_ids = verify_special_tokens(sp)

    bytes_per_token: dict[str, float] = {}
    eval_bytes: dict[str, int] = {}
    eval_tokens: dict[str, int] = {}
    eval_docs: dict[str, int] = {}
    for d in domains:
        texts = list(held[d].texts()) if held[d] is not None else []
        eval_docs[d] = len(texts)
        if not texts:
            continue
        enc = sp.encode(texts, num_threads=cfg.num_threads)
        nb = sum(len(t.encode("utf-8")) for t in texts)
        nt = sum(map(len, enc))
        eval_bytes[d], eval_tokens[d] = nb, nt
        bytes_per_token[d] = round(nb / max(nt, 1), 4)
    sample_docs = {d: len(train[d]) if train[d] is not None else 0 for d in domains}
    stats["kept"] += sum(sample_docs.values())
    return {
        "model_path": str(model_path),
        "vocab_size": sp.get_piece_size(),
        "vocab_size_requested": cfg.vocab_size,
        "special_token_ids": special_ids,
        "bytes_per_token": bytes_per_token,
        "eval_bytes_per_domain": eval_bytes,
        "eval_tokens_per_domain": eval_tokens,
        "sample_chars_budget_per_domain": budgets,
        "sample_chars_per_domain": {d: sum(x[4] for x in train[d].heap) if train[d] is not None else 0
                                    for d in domains},
        "sample_docs_per_domain": sample_docs,
        "eval_docs_per_domain": eval_docs,
        "sample_lines": n_lines,
        "sample_file_bytes": n_bytes,
        "sampling": "equal chars per domain" if not cfg.sample_weights else "chars per domain by sample_weights",
        "train_seconds": round(train_s, 3),
    }


def verify_special_tokens(sp) -> dict[str, int]:
    """Check pad/unk/bos/eos ids and that each chat token is one piece with its reserved id; return the ids."""
    got = (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
    if got != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
        raise ValueError(f"tokenizer: pad/unk/bos/eos ids are {got}, expected {(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}")
    ids = {}
    for i, tok in enumerate(CHAT_SPECIAL_TOKENS):
        want = FIRST_SPECIAL_ID + i
        pid = sp.piece_to_id(tok)
        enc = sp.encode(f"a{tok}b")
        if pid != want or enc.count(want) != 1 or sp.decode([want]) != tok:
            raise ValueError(f"tokenizer: chat token {tok!r} is not the single id {want} (piece id {pid}, {enc})")
        ids[tok] = want
    return ids
