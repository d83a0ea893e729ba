"""Pinned host memory for the streaming engine: exact-size page-locked slabs and a bounded gradient ring.

Gradients reach the host optimizer through `GradPipe`: a copier thread takes a free slot of the ring (blocking
while all are in use), copies a unit's gradient into it on the device-to-host stream, and hands it to the
optimizer thread, which steps that unit and frees the slot. So the host holds at most `slots` layers of
gradient, whatever the model size, and neither the main thread nor the GPU waits on a slot.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

import torch

_REGISTERED: list[torch.Tensor] = []


def pinned_empty(numel: int, dtype: torch.dtype, cuda: bool) -> torch.Tensor:
    """Host tensor page-locked with cudaHostRegister (exact size, unlike the power-of-two caching host
    allocator); pin_memory=True as a fallback; plain memory without cuda."""
    t = torch.empty(numel, dtype=dtype)
    if not cuda or numel == 0:
        return t
    t.zero_()  # touch the pages so registration does not race first use
    if register_pinned(t):
        return t
    return torch.empty(numel, dtype=dtype, pin_memory=True)


def register_pinned(t: torch.Tensor) -> bool:
    """Page-lock an existing host tensor in place (also memory shared with other processes); False if refused."""
    try:
        rc = torch.cuda.cudart().cudaHostRegister(t.data_ptr(), t.numel() * t.element_size(), 0)
        if int(rc) == 0 and t.is_pinned():
            _REGISTERED.append(t)  # never unregistered: lives as long as the process
            return True
    except Exception:
        pass
    return False


class PinnedRing:
    """`slots` equal pinned buffers handed out and returned through a queue (acquire blocks when none is free)."""

    def __init__(self, slots: int, numel: int, dtype: torch.dtype, cuda: bool):
        self.buffers = [pinned_empty(numel, dtype, cuda) for _ in range(slots)]
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(slots):
            self._free.put(i)
        self.in_use = 0
        self.max_in_use = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self.buffers)

    def acquire(self) -> int:
        i = self._free.get()
        with self._lock:
            self.in_use += 1
            self.max_in_use = max(self.max_in_use, self.in_use)
        return i

    def release(self, i: int) -> None:
        with self._lock:
            self.in_use -= 1
        self._free.put(i)


class GradPipe:
    """Ordered two-thread pipeline: gradient -> ring slot (copier thread) -> host optimizer step (optimizer thread).

    `ship(src, fn, ready, via_ring)` returns a Future set once fn(host_grad) has run. With via_ring, src (on the
    device; on the CPU too, so CI runs this path) is copied into a ring slot once `ready` (a CUDA event) has
    passed; otherwise src is already the host gradient (a dedicated pinned stash) and is used in place once
    `ready` has completed. Tasks run in submission order."""

    def __init__(self, ring: PinnedRing, d2h_stream, timed: bool = False):
        self.ring, self.stream, self.timed = ring, d2h_stream, timed
        self._copy_q: queue.SimpleQueue = queue.SimpleQueue()
        self._step_q: queue.SimpleQueue = queue.SimpleQueue()
        self.copied_bytes = 0
        self.slot_wait_s = 0.0
        self.d2h_s = 0.0  # device-to-host copy time through the ring (CUDA events, summed once complete)
        self._threads = [threading.Thread(target=self._copier, name="grad-d2h", daemon=True),
                         threading.Thread(target=self._stepper, name="host-adamw", daemon=True)]
        for t in self._threads:
            t.start()

    def ship(self, src: torch.Tensor, fn: Callable[[torch.Tensor], None], ready=None, via_ring: bool = True) -> Future:
        fut: Future = Future()
        self._copy_q.put([src, fn, ready, via_ring, fut])
        return fut

    def _copy(self, src: torch.Tensor, ready):
        t0 = time.perf_counter()
        slot = self.ring.acquire()
        self.slot_wait_s += time.perf_counter() - t0
        view = self.ring.buffers[slot][: src.numel()]
        if self.stream is None:
            view.copy_(src.reshape(-1))
            return slot, view, None, None
        with torch.cuda.stream(self.stream):
            if ready is not None:
                self.stream.wait_event(ready)
            start = torch.cuda.Event(enable_timing=True) if self.timed else None
            if start is not None:
                start.record(self.stream)
            view.copy_(src.reshape(-1), non_blocking=True)
            done = torch.cuda.Event(enable_timing=self.timed)
            done.record(self.stream)
        self.copied_bytes += src.numel() * src.element_size()
        return slot, view, done, start

    def _copier(self) -> None:
        while True:
            item = self._copy_q.get()
            if item is None:
                self._step_q.put(None)
                return
            src, fn, ready, via_ring, fut = item
            item.clear()
            try:
                if via_ring:
                    slot, view, done, start = self._copy(src, ready)
                else:
                    slot, view, done, start = None, src, ready, None
                self._step_q.put([src, view, slot, done, start, fn, fut])
            except BaseException as e:  # reported through this unit's future; the order is kept
                fut.set_exception(e)
            del src, item

    def _stepper(self) -> None:
        while True:
            item = self._step_q.get()
            if item is None:
                return
            src, view, slot, done, start, fn, fut = item
            item.clear()
            try:
                if done is not None:
                    done.synchronize()
                    if start is not None:
                        self.d2h_s += start.elapsed_time(done) / 1000.0
                del src  # the copy is finished: the gradient's device memory may be reused
                fn(view)
                fut.set_result(None)
            except BaseException as e:
                fut.set_exception(e)
            finally:
                if slot is not None:
                    self.ring.release(slot)
            del view, fn, item

    def close(self) -> None:
        self._copy_q.put(None)
        for t in self._threads:
            t.join()
