"""Fast batch encoding with a SentencePiece BPE model, token for token identical to `sp.encode`.

SentencePiece's BPE merges adjacent symbols whose concatenation is a vocabulary piece, best score first. If no
piece holds the two characters on either side of a position, no merge can cross it, and the encoding of the
text is the concatenation of the encodings of its parts (ties between equal scores go to the leftmost pair, the
same order inside a part). The pieces of our tokenizer never cross these *split points*:

- a space (or a literal U+2581) after a character that is not one: a piece holds whitespace only as its
  prefix, or only whitespace (split_by_whitespace with allow_whitespace_only_pieces);
- either side of a newline: training lines are split at newlines, so no piece holds one;
- between an ASCII letter and another ASCII character that is not a space or newline (digit, punctuation,
  control): split_by_unicode_script keeps a piece to one script, and these are Latin and Common.

`SegmentEncoder` checks this on the model's pieces when it loads (a model whose pieces cross only the third kind
is cut at the first two alone; one that crosses the others, has a normaliser other than identity or is not BPE
is encoded with plain `sp.encode`). A batch of texts is cut into parts at the split points in numpy, on the
UTF-8 bytes of the Arrow string array; the parts are a second Arrow string array over the same bytes, hashed
there (`dictionary_encode`), and only the batch's distinct parts are looked up in a per-process cache (a text's
first part, which follows the dummy prefix `▁`, in a cache of its own). Only parts never seen before are encoded
by SentencePiece: joined by newlines into strings of about a kilobyte, one batch call, the tokens cut back at
the parts' byte offsets (checked to be token boundaries, else each part is encoded alone). Tokens are assembled
with numpy; nothing runs per token or per part in Python. Texts holding a user-defined symbol (the chat tokens,
which SentencePiece matches before anything else) or a literal U+2581 go to plain `sp.encode`. The caches are
emptied when they grow past `max_entries` parts or `max_tokens` tokens.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from itertools import repeat
from operator import methodcaller
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_WS = " \u2581"
# UTF-8 byte classes for the split points: space, newline, ASCII letter, other ASCII, non-ASCII (U+2581 texts go
# to plain sp.encode, so no non-ASCII byte is a space); pair tables: is there a split point between two bytes?
_S, _N, _L, _C, _X = 0, 1, 2, 3, 4
_BYTE_CLASS = np.full(256, _X, np.uint8)
_BYTE_CLASS[:128] = _C
_BYTE_CLASS[[ord(c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"]] = _L
_BYTE_CLASS[ord(" ")], _BYTE_CLASS[ord("\n")] = _S, _N
_SPLIT_SPACE = np.zeros(64, bool)  # index: (class before << 3) | class after
for _a in range(5):
    for _b in range(5):
        _SPLIT_SPACE[(_a << 3) | _b] = _a == _N or _b == _N or (_b == _S and _a != _S)
_SPLIT_SCRIPT = _SPLIT_SPACE.copy()
_SPLIT_SCRIPT[[(_L << 3) | _C, (_C << 3) | _L]] = True
_JOIN_CHARS = 1024  # new parts are encoded as newline-joined strings of about this many bytes


# pa.array, to_numpy and Python scalars in compute calls make pyarrow import pandas: 0.2 s of every fresh worker
# process. These helpers move integer arrays between numpy and Arrow through their buffers instead.
_NP = {pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
       pa.uint32(): np.uint32, pa.uint64(): np.uint64}


def numpy_ints(arr: pa.Array | pa.ChunkedArray, null: int = 0) -> np.ndarray:
    """The values of an integer Arrow array as numpy (nulls read as `null`)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    if arr.null_count:
        return np.array([null if v is None else v for v in arr.to_pylist()], dtype=_NP[arr.type])
    return np.frombuffer(arr.buffers()[1], dtype=_NP[arr.type], count=arr.offset + len(arr))[arr.offset :]


def true_indices(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Indices where a boolean Arrow array is true (null counts as false)."""
    return numpy_ints(pc.indices_nonzero(mask)).astype(np.int64)


def arrow_ints(x: np.ndarray) -> pa.Array:
    """An int64 Arrow array over a numpy array's buffer."""
    x = np.ascontiguousarray(x, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(x), [None, pa.py_buffer(x)])


def arrow_strings(values: Sequence[str]) -> pa.Array:
    """A string Arrow array of Python strings, built from buffers (see arrow_ints)."""
    data = [v.encode() for v in values]
    offsets = np.zeros(len(data) + 1, np.int32)
    np.cumsum(np.fromiter(map(len, data), np.int64, len(data)), out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(data), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])


def _ascii_class(c: str) -> str:
    if c == " ":
        return "S"
    if c == "\n":
        return "N"
    if not c.isascii():
        return "S" if c == "\u2581" else "X"
    return "L" if c.isalpha() else "C"


def split_pair(a: str, b: str, script: bool = True) -> bool:
    """Whether characters a, b next to each other sit on a split point (see the module doc); `script`: the
    ASCII letter / other ASCII boundary counts too."""
    ca, cb = _ascii_class(a), _ascii_class(b)
    if ca == "N" or cb == "N" or (cb == "S" and ca != "S"):
        return True
    return script and {ca, cb} == {"L", "C"}


def _ineligible(proto, script: bool = True) -> str | None:
    """None when the split points hold for this model, else why not."""
    from plasma_pipeline.tokenizer.model_proto import model_pb2
    pb = model_pb2()

    ts, ns = proto.trainer_spec, proto.normalizer_spec
    if ts.model_type != pb.TrainerSpec.BPE:
        return "model type is not BPE"
    if ns.precompiled_charsmap or ns.name not in ("identity", ""):
        return f"normaliser {ns.name!r} is not identity"
    if ns.remove_extra_whitespaces or not ns.escape_whitespaces or ts.treat_whitespace_as_suffix:
        return "whitespace handling differs from the default escape-as-prefix"
    kinds = (pb.ModelProto.SentencePiece.NORMAL, pb.ModelProto.SentencePiece.UNUSED)
    bad = _CROSSING_SCRIPT if script else _CROSSING_SPACE
    for p in proto.pieces:
        if p.type in kinds and len(p.piece) > 1 and bad.search(p.piece.translate(_CLASS_LETTER)):
            return f"piece {p.piece!r} crosses a split point"
    return None


# split_pair on a whole piece at once: ASCII characters and U+2581 mapped to their class letters (any other
# character stays itself, never an ASCII letter), then a search for a class pair that sits on a split point
_CLASS_LETTER = {i: _ascii_class(chr(i)) for i in range(128)} | {0x2581: "S"}
_CROSSING_SPACE = re.compile(r"N|[^S]S")
_CROSSING_SCRIPT = re.compile(r"N|[^S]S|LC|CL")


class _Entries:
    """key -> entry index, and each entry's run (start, length) in the encoder's token buffer."""

    def __init__(self):
        self.index: dict[str, int] = {}
        self.start = np.zeros(1 << 12, np.int64)
        self.len = np.zeros(1 << 12, np.int64)

    def lookup(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Entries of distinct keys, and the positions of the new ones, which get the next indices in order."""
        index = self.index
        ids = np.fromiter(map(index.get, keys, repeat(-1)), np.int64, len(keys))
        miss = np.flatnonzero(ids < 0)
        if len(miss):
            n = len(index)
            index.update(zip([keys[i] for i in miss.tolist()], range(n, n + len(miss))))
            ids[miss] = np.arange(n, n + len(miss))
            if n + len(miss) > len(self.start):
                cap = max(n + len(miss), 2 * len(self.start))
                self.start, self.len = np.resize(self.start, cap), np.resize(self.len, cap)
        return ids, miss


class SegmentEncoder:
    """Batch encoder for one SentencePiece model: `encode(texts)` -> (tokens int32, per-text lengths int64)."""

    def __init__(self, model_path: str | os.PathLike, num_threads: int = 1,
                 max_entries: int = 1 << 20, max_tokens: int = 1 << 24):
        import sentencepiece as spm
        from plasma_pipeline.tokenizer.model_proto import model_pb2
        pb = model_pb2()

        blob = Path(model_path).read_bytes()
        self.sp = spm.SentencePieceProcessor(model_proto=blob)
        self.num_threads, self.max_entries, self.max_tokens = num_threads, max_entries, max_tokens
        proto = pb.ModelProto()
        proto.ParseFromString(blob)
        self.why_plain = _ineligible(proto, script=False)
        # cut at the ASCII letter / other boundary too where no piece crosses it (more cache hits)
        self.script = self.why_plain is None and _ineligible(proto, script=True) is None
        self.user_symbols = [p.piece for p in proto.pieces if p.type == pb.ModelProto.SentencePiece.USER_DEFINED]
        self.dummy = proto.normalizer_spec.add_dummy_prefix
        # texts for plain sp.encode: a literal U+2581 or a user-defined symbol (RE2 syntax)
        self._plain_re = "|".join(["\u2581"] + [re.escape(u) for u in self.user_symbols])
        if self.why_plain is None:
            proto.normalizer_spec.add_dummy_prefix = False
            self.sp_raw = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
            n = self.sp.get_piece_size()
            # bytes of normalised text (space = the 3-byte U+2581) that each token stands for
            self.piece_bytes = np.array(
                [1 if self.sp.is_byte(i) else 0 if (self.sp.is_control(i) or self.sp.is_unknown(i))
                 else len(self.sp.id_to_piece(i).encode()) for i in range(n)], dtype=np.int64)
            nl = self.sp_raw.encode("\n")
            if len(nl) != 1 or self.piece_bytes[nl[0]] != 1:
                self.why_plain = "a newline is not one token"
        self.stats = {"parts": 0, "new_parts": 0, "plain_docs": 0, "resets": 0}
        self._reset()

    # -- cache ----------------------------------------------------------------------------------------------
    def _reset(self) -> None:
        self.first = _Entries()  # a text's first part (encoded after the dummy prefix) -> entry
        self.parts = _Entries()  # any other part, with its leading spaces -> entry
        self._buf = np.zeros(1 << 18, np.int32)
        self._nbuf = 0

    def _store(self, table: _Entries, first: int, toks: np.ndarray, lens: np.ndarray) -> None:
        """Entries first.. of `table` get consecutive runs of `toks` with lengths `lens`."""
        if self._nbuf + len(toks) > len(self._buf):
            self._buf = np.resize(self._buf, max(self._nbuf + len(toks), 2 * len(self._buf)))
        self._buf[self._nbuf : self._nbuf + len(toks)] = toks
        table.start[first : first + len(lens)] = self._nbuf + np.cumsum(lens) - lens
        table.len[first : first + len(lens)] = lens
        self._nbuf += len(toks)

    def _gather(self, starts: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Buffer runs (starts, lens) concatenated, and the cumulative token count after each run."""
        ends = np.cumsum(lens)
        total = int(ends[-1]) if len(ends) else 0
        src = np.arange(total, dtype=np.int64) - np.repeat(ends - lens - starts, lens)
        return self._buf[src], ends

    # -- encoding of new parts -----------------------------------------------------------------------------------
    def _encode_alone(self, parts: list[str], lead: str = "",
                      nbytes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Tokens of each (lead + part) encoded alone, no dummy prefix: newline-joined batches, cut at byte offsets.

        `nbytes`: each part's normalised bytes if known (UTF-8, a space counting 3 bytes like U+2581)."""
        n = len(parts)
        # bytes of each string once normalised: UTF-8, with every space the 3-byte U+2581
        if nbytes is None:
            nbytes = np.fromiter((len(p) if p.isascii() else len(p.encode()) for p in parts), np.int64, n)
            nbytes += 2 * np.fromiter(map(methodcaller("count", " "), parts), np.int64, n)
        nbytes = nbytes + 3 * len(lead)
        group = np.cumsum(nbytes + 1) // _JOIN_CHARS
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(group)) + 1, [n]))
        sep = "\n" + lead
        texts = [lead + sep.join(parts[a:b]) for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())]
        enc = self.sp_raw.encode(texts, return_type="numpy", num_threads=self.num_threads)
        toks = np.concatenate(enc)
        tok_end = np.cumsum(self.piece_bytes[toks])
        # byte end of each string in all batches concatenated: a newline byte after each but a batch's last
        nl = np.ones(n, np.int64)
        nl[bounds[1:] - 1] = 0
        end = np.cumsum(nbytes + nl) - nl
        start = end - nbytes
        i_end = np.searchsorted(tok_end, end, side="left")  # a string's last token ends at its last byte
        i_start = np.searchsorted(tok_end, start, side="right")  # its first token starts at its first byte
        ok = len(toks) > 0 and i_end[-1] == len(toks) - 1
        if ok:
            before = np.where(i_start > 0, tok_end[np.maximum(i_start - 1, 0)], 0)
            ok = np.array_equal(tok_end[i_end], end) and np.array_equal(before, start)
        if not ok:  # not expected for an eligible model; stay exact anyway (one string per item)
            enc = self.sp_raw.encode([lead + p for p in parts], return_type="numpy", num_threads=self.num_threads)
            return np.concatenate(enc), np.fromiter(map(len, enc), np.int64, len(enc))
        keep = np.ones(len(toks), bool)
        keep[i_end[nl == 1] + 1] = False  # the newline tokens between strings
        return toks[keep], i_end + 1 - i_start

    def _resolve(self, table: _Entries, keys: Sequence[str], lead: str = "",
                 key_bytes: np.ndarray | None = None) -> np.ndarray:
        """Entries of distinct keys, encoding (lead + key) for the new ones."""
        ids, miss = table.lookup(keys)
        if len(miss):
            self.stats["new_parts"] += len(miss)
            new = [keys[i] for i in miss.tolist()]
            toks, lens = self._encode_alone(new, lead, None if key_bytes is None else key_bytes[miss])
            self._store(table, len(table.index) - len(miss), toks, lens)
        return ids

    # -- public -----------------------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str] | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """(all tokens of all texts concatenated as int32, tokens per text as int64), equal to sp.encode's."""
        arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else arrow_strings(list(texts))
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
        if pa.types.is_large_string(arr.type):
            arr = arr.cast(pa.string())
        n = len(arr)
        if self.why_plain is not None:
            return self._plain(arr.to_pylist())
        if len(self.first.index) + len(self.parts.index) > self.max_entries \
                or self._nbuf > self.max_tokens:
            self._reset()
            self.stats["resets"] += 1
        plain = true_indices(pc.match_substring_regex(arr, self._plain_re))
        if not len(plain):
            return self._fast(arr)
        self.stats["plain_docs"] += len(plain)
        fast = np.setdiff1d(np.arange(n), plain)
        ft, fl = self._fast(arr.take(arrow_ints(fast)))
        pt, pl = self._plain(arr.take(arrow_ints(plain)).to_pylist())
        lens = np.zeros(n, np.int64)
        lens[fast], lens[plain] = fl, pl
        out = np.empty(int(lens.sum()), np.int32)
        starts = np.cumsum(lens) - lens
        for sel, toks, ls in ((fast, ft, fl), (plain, pt, pl)):  # scatter each route's runs to its documents
            ends = np.cumsum(ls)
            out[np.arange(len(toks)) - np.repeat(ends - ls - starts[sel], ls)] = toks
        return out, lens

    def _plain(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.sp.encode(texts, return_type="numpy", num_threads=self.num_threads) if texts else []
        lens = np.fromiter(map(len, enc), np.int64, len(enc))
        return (np.concatenate(enc) if len(enc) else np.zeros(0, np.int32)), lens

    def _fast(self, arr: pa.StringArray) -> tuple[np.ndarray, np.ndarray]:
        """Texts without user symbols or U+2581: cut into parts at the split points on their UTF-8 bytes (numpy),
        the parts made an Arrow array over the same bytes, hashed there; only distinct parts reach Python."""
        n = len(arr)
        _, obuf, dbuf = arr.buffers()
        offs = np.frombuffer(obuf, np.int32, count=arr.offset + n + 1)[arr.offset :].astype(np.int64)
        lo, hi = int(offs[0]), int(offs[-1])
        b = np.frombuffer(dbuf, np.uint8, count=hi)[lo:] if dbuf is not None else np.zeros(0, np.uint8)
        cls = _BYTE_CLASS[b]
        cut = (_SPLIT_SCRIPT if self.script else _SPLIT_SPACE)[(cls[:-1] << 3) | cls[1:]]
        starts = np.zeros(len(b), bool)
        starts[1:] = cut
        doc_start = offs[:-1] - lo
        nonempty = offs[1:] > offs[:-1]
        starts[doc_start[nonempty]] = True
        pstart = np.flatnonzero(starts)
        bounds = np.append(pstart, len(b))
        first = np.searchsorted(pstart, doc_start[nonempty])  # a text's first part follows the dummy prefix
        parts = pa.Array.from_buffers(pa.string(), len(pstart),
                                      [None, pa.py_buffer((bounds + lo).astype(np.int32)), dbuf])
        self.stats["parts"] += len(pstart)
        # every part through the parts cache (a first part's entry there is unused), then the first parts' own
        enc = pc.dictionary_encode(parts)
        ids = self._resolve(self.parts, enc.dictionary.to_pylist())[numpy_ints(enc.indices)]
        starts_tok, lens_tok = self.parts.start[ids], self.parts.len[ids]
        if len(first):
            enc = pc.dictionary_encode(parts.take(arrow_ints(first)))
            ids = self._resolve(self.first, enc.dictionary.to_pylist(), " " if self.dummy else "")
            ids = ids[numpy_ints(enc.indices)]
            starts_tok[first], lens_tok[first] = self.first.start[ids], self.first.len[ids]
        toks, ends = self._gather(starts_tok, lens_tok)
        doc_end = np.searchsorted(pstart, np.append(doc_start[1:], len(b)))  # parts up to each text's end
        tok_end = np.where(doc_end > 0, ends[np.maximum(doc_end - 1, 0)], 0) if len(ends) else np.zeros(n, np.int64)
        return toks, np.diff(np.concatenate(([0], tok_end)))


_ENCODERS: dict[tuple[str, float, int], SegmentEncoder] = {}


def load_encoder(path: str | os.PathLike, num_threads: int = 1) -> SegmentEncoder:
    """SegmentEncoder for `path`, one per process (keyed by path, mtime and threads), its cache kept across calls."""
    p = str(Path(path).resolve())
    key = (p, os.path.getmtime(p), num_threads)
    enc = _ENCODERS.get(key)
    if enc is None:
        enc = _ENCODERS[key] = SegmentEncoder(p, num_threads=num_threads)
    return enc
