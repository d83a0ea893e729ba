"""Progress bars on a terminal (tqdm): documents done of the total, the rate and an ETA. Off when stderr is not a
terminal (CI, Dagster's captured logs), where the stages' log lines say the same; `PLASMA_PROGRESS=1` forces the
bars on, `PLASMA_PROGRESS=0` off."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from typing import IO, Any


def enabled(stream: IO | None = None) -> bool:
    forced = os.environ.get("PLASMA_PROGRESS", "")
    if forced in ("0", "1"):
        return forced == "1"
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class _Off:
    def update(self, n: int = 1) -> None:
        pass

    def update_docs(self, docs: int, nbytes: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


@contextlib.contextmanager
def terminal_bar(total: int | None, desc: str, unit: str = "docs", stream: IO | None = None) -> Iterator[Any]:
    """A tqdm bar of `total` `unit`s (rate and ETA from tqdm), or an object whose `update` does nothing."""
    stream = stream or sys.stderr
    if not enabled(stream):
        yield _Off()
        return
    from tqdm import tqdm

    with tqdm(total=total or None, desc=desc, unit=f" {unit}", unit_scale=True, file=stream, dynamic_ncols=True,
              mininterval=0.5, smoothing=0.1) as bar:
        yield bar


class _BytesDocs:
    """A bar over input bytes (known up front from file sizes, so the ETA is honest) that shows the documents
    read so far, their rate and the total they extrapolate to."""

    def __init__(self, bar):
        self.bar, self.docs, self.t0 = bar, 0, time.monotonic()

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def update_docs(self, docs: int, nbytes: int = 0) -> None:
        self.docs += docs
        self.bar.update(nbytes)
        rate = self.docs / max(time.monotonic() - self.t0, 1e-9)
        frac = self.bar.n / self.bar.total if self.bar.total else 0
        est = f" of ~{self.docs / frac:,.0f}" if frac else ""
        self.bar.set_postfix_str(f"{self.docs:,}{est} docs, {rate:,.0f} docs/s", refresh=False)

    def close(self) -> None:
        self.bar.close()


def bytes_docs_bar(total_bytes: int, desc: str, stream: IO | None = None) -> Any:
    """`update_docs(docs, nbytes)` after each part: bytes drive the bar and ETA, documents the postfix; `close()`
    at the end."""
    stream = stream or sys.stderr
    if not enabled(stream):
        return _Off()
    from tqdm import tqdm

    return _BytesDocs(tqdm(total=total_bytes or None, desc=desc, unit="B", unit_scale=True, file=stream,
                           dynamic_ncols=True, mininterval=0.5, smoothing=0.1))


def part_bytes(part: Any) -> int:
    """Input bytes one reader part covers (a byte range, the share of row groups of a Parquet file, or the file)."""
    try:
        size = os.path.getsize(part.path)
    except OSError:
        return 0
    if part.stop is None:
        return max(0, size - part.start) if part.fmt != "parquet" else size
    if part.fmt == "parquet":
        import pyarrow.parquet as pq

        groups = pq.ParquetFile(part.path).metadata.num_row_groups or 1
        return size * (part.stop - part.start) // groups
    return part.stop - part.start
