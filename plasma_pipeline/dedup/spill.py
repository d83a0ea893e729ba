"""The dedup's spill directory: what the shard workers write and the parent reads back a band (or a range) at a
time, so the parent never holds the corpus's signatures.

Per shard `i` (written by the worker that computed it, `signatures.spill_signatures`):

- `sNNNNN.bands.npy`   bands x docs uint64 band hashes (band-major: one band of a shard is one contiguous read);
- `sNNNNN.exact.npy`   uint64 exact key per doc; `sNNNNN.length.npy` int64 text length; `sNNNNN.source.npy`
  int32 code into the shard's source names (returned by the worker); `sNNNNN.words.npy` bool "has a word";
- `sNNNNN.ids.parquet` the doc ids (read only for the few docs whose keeper is decided by id);
- `sNNNNN.sh.u64` + `sNNNNN.shn.npy` sorted unique 40-bit shingle hashes of the docs in a candidate pair, and
  their counts (written by `signatures.spill_shingles`, concatenated by the parent into `shingles.u64`).

Parent files: `pairs.u64` (candidate pairs of every band, appended), `pairs.NNNNN.u64` (the same split into
ranges of the smaller doc index, each sorted and unique), `shingles.u64`.

Reads go through `np.fromfile` (a copy into this process, not a mapping), so the resident memory is what the
caller holds; `MappedArray` maps a big file for random access and drops its pages after each batch."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

READ_CHUNK = 1 << 20  # entries per read when streaming a column (8 MiB of uint64)


class Spill:
    """Paths of the spill directory `root`, and reads of its .npy files (headers cached per file)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._headers: dict[str, tuple[tuple[int, ...], np.dtype, int]] = {}

    def shard(self, i: int, what: str) -> Path:
        ext = {"ids": "parquet", "sh": "u64"}.get(what, "npy")
        return self.root / f"s{i:05d}.{what}.{ext}"

    def file(self, name: str) -> Path:
        return self.root / name

    def _header(self, path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, int]:
        key = str(path)
        if key not in self._headers:
            m = np.load(key, mmap_mode="r")  # reads the header; no page of the data is touched
            self._headers[key] = (m.shape, m.dtype, m.offset)
            del m
        return self._headers[key]

    def shape(self, path: str | os.PathLike) -> tuple[int, ...]:
        return self._header(path)[0]

    def read(self, path: str | os.PathLike, start: int = 0, count: int | None = None,
             row: int | None = None) -> np.ndarray:
        """Entries [start, start + count) of a 1-D .npy file, or of row `row` of a 2-D one (C order)."""
        shape, dtype, offset = self._header(path)
        width = shape[-1] if shape else 1
        count = width - start if count is None else min(count, width - start)
        if count <= 0:
            return np.zeros(0, dtype)
        base = 0 if row is None else row * width
        return np.fromfile(str(path), dtype, count, offset=offset + (base + start) * dtype.itemsize)

    def chunks(self, path: str | os.PathLike, row: int | None = None, chunk: int = READ_CHUNK):
        """(start, entries) chunks of a 1-D .npy file or of one row of a 2-D one."""
        width = self.shape(path)[-1]
        for lo in range(0, width, chunk):
            yield lo, self.read(path, lo, chunk, row)


def append_raw(path: str | os.PathLike, arr: np.ndarray) -> None:
    with open(path, "ab") as f:
        arr.tofile(f)


def raw_len(path: str | os.PathLike, dtype=np.uint64) -> int:
    return os.path.getsize(path) // np.dtype(dtype).itemsize if os.path.exists(path) else 0


def iter_raw(path: str | os.PathLike, dtype=np.uint64, chunk: int = READ_CHUNK):
    """Chunks of a raw binary file of `dtype` values."""
    n = raw_len(path, dtype)
    size = np.dtype(dtype).itemsize
    for lo in range(0, n, chunk):
        yield np.fromfile(str(path), dtype, min(chunk, n - lo), offset=lo * size)


def read_raw(path: str | os.PathLike, dtype=np.uint64) -> np.ndarray:
    return np.fromfile(str(path), dtype) if os.path.exists(path) else np.zeros(0, dtype)


class MappedArray:
    """A raw file mapped read-only as a numpy array; `release()` drops its pages from this process (they stay in
    the page cache), so random reads across a file larger than memory keep the resident set to one batch."""

    def __init__(self, path: str | os.PathLike, dtype=np.uint64):
        self._f = open(path, "rb")
        size = os.fstat(self._f.fileno()).st_size
        self._mm = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.array = np.frombuffer(self._mm, dtype) if self._mm is not None else np.zeros(0, dtype)

    def release(self) -> None:
        if self._mm is not None and hasattr(self._mm, "madvise"):
            self._mm.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        self.array = None
        if self._mm is not None:
            self._mm.close()
        self._f.close()


def _libc_trim():
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_MALLOC_TRIM = _libc_trim()


def release_memory() -> None:
    """Hand freed memory back to the OS after a pass: glibc's heap (numpy arrays below malloc's mmap threshold,
    which rises to 32 MiB once big arrays are freed) and Arrow's pool. Without it the next pass's peak sits on
    top of the last one's leftovers."""
    import pyarrow as pa

    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
    pa.default_memory_pool().release_unused()
