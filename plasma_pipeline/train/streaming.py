"""Streaming engine: fp32 master weights and AdamW moments live in host memory; layers stream through the GPU.

Host memory is 12 bytes per parameter (pinned fp32 master, fp32 exp_avg and exp_avg_sq) plus bounded rings:
no bf16 working copy and no full-model gradient copy live on the host.

Per step:
  forward   each unit's fp32 master is copied host-to-device on a copy stream through a fixed fp32 staging
            buffer and cast to the compute dtype into one of two device block buffers while the previous block
            computes. The whole batch (in micro-chunks) passes one block before the next. Per the memory plan
            (plan.py), the top blocks keep their autograd graph on the GPU (saved-tensor hooks swap the block's
            weights out of the graph, so a buffer can be refilled and the weights are re-streamed for backward);
            the others keep only their input (on the GPU, or offloaded to pinned host memory) and are recomputed.
  head      loss and its gradient w.r.t. the last boundary activation and the head weights.
  backward  blocks in reverse: backprop through the kept graph, or recompute from the saved input and backprop.
            Each unit's gradient waits on the GPU (or, when the plan says so, in a pinned host stash) until the
            global norm is known (exact clipping), then goes through a bounded pinned ring to the host AdamW
            (host_rings.GradPipe), in forward order, overlapping the next step's forward: the next forward
            waits only for the unit it is about to load.
  speculation  when the last step was not clipped, each unit is stepped as soon as its gradient exists; if the
            norm then clips, the step is undone and redone from the same gradient.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import time
from concurrent.futures import Future

import torch

from plasma_pipeline.train.config import ModelConfig, TrainConfig
from plasma_pipeline.train.data import Batch
from plasma_pipeline.train.distributed import all_reduce_sum_, world_size
from plasma_pipeline.train.engine import StepStats, autocast_ctx, split_batch, to_device
from plasma_pipeline.train.host_rings import GradPipe, PinnedRing, pinned_empty
from plasma_pipeline.train.node_master import NodeMaster, local_world
from plasma_pipeline.train.model import embed, init_unit_, make_block_fn, make_head_fn, rope_cos_sin, unit_specs
from plasma_pipeline.train.optim import adamw_flat_, adamw_flat_compiled_, adamw_undo_flat_, compiled_adamw_available
from plasma_pipeline.train.plan import STAGE_NUMEL, device_budget, meminfo_bytes, plan_for, ring_slot_numel

class _Timer:
    """CUDA-event intervals on a stream, summed once the step has synchronised."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.spans: dict[str, list[tuple[torch.cuda.Event, torch.cuda.Event]]] = {}

    def start(self, kind: str, stream=None):
        if not self.enabled:
            return None
        ev = torch.cuda.Event(enable_timing=True)
        ev.record(stream) if stream is not None else ev.record()
        return (kind, ev)

    def stop(self, tok, stream=None):
        if tok is None:
            return None
        kind, s = tok
        e = torch.cuda.Event(enable_timing=True)
        e.record(stream) if stream is not None else e.record()
        self.spans.setdefault(kind, []).append((s, e))
        return e

    def totals(self) -> dict[str, float]:
        out = {k: sum(s.elapsed_time(e) for s, e in v) / 1000.0 for k, v in self.spans.items()}
        self.spans = {}
        return out


class StreamingEngine:
    def __init__(self, mcfg: ModelConfig, tcfg: TrainConfig, device: torch.device, dtype: torch.dtype,
                 weights: dict[str, torch.Tensor] | None = None, seq_len: int | None = None):
        self.cfg, self.tcfg, self.device, self.dtype = mcfg, tcfg, device, dtype
        self.cuda = device.type == "cuda"
        self.specs = unit_specs(mcfg)
        # Plan first: a run that cannot fit fails here, before any allocation.
        budget = device_budget(device, tcfg.gpu_memory_gb)
        self.plan = plan_for(mcfg, tcfg, device, dtype, seq_len or mcfg.max_seq_len)
        if self.cuda and tcfg.gpu_memory_gb > 0:  # the budget is enforced, not only planned for
            total_mem = torch.cuda.get_device_properties(device).total_memory
            index = device.index if device.index is not None else torch.cuda.current_device()
            torch.cuda.set_per_process_memory_fraction(min(1.0, budget / total_mem), index)
        self.micro = self.plan.micro_batch
        self.n_rc = self.plan.recompute_layers  # blocks [0, n_rc) recompute; [n_rc, L) keep their graph
        self.block_fn = make_block_fn(mcfg, tcfg.compile and self.cuda)
        self.head_fn = make_head_fn(tcfg.compile and self.cuda)
        if tcfg.cpu_adam_threads > 0:
            torch.set_num_threads(tcfg.cpu_adam_threads)
        elif self.cuda:  # leave cores to the main thread, autograd's device thread and the copier: OpenMP
            # threads that lose their core stall the whole AdamW region (seen: 5x slower with cpu_count - 2)
            # Data-parallel ranks on one host (torchrun's LOCAL_WORLD_SIZE) share its cores. AdamW is bound by
            # host memory bandwidth, which fewer threads already fill: on the 16-core H200 box 8 threads beat 12
            # (1.2b: host AdamW 0.28 s against 0.32, and the GPU's backward, which shares that bandwidth through
            # the gradient and weight copies, 1.42 s against 1.50 s), so at most half the cores.
            cores = (os.cpu_count() or 2) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
            torch.set_num_threads(max(1, min(torch.get_num_threads(), cores - 4, cores // 2)))
        total = sum(spec.numel for spec in self.specs)
        self.total_numel = total
        # Host: one pinned fp32 master slab (the H2D source), the two moments; nothing else model-sized. Several
        # data-parallel ranks on one host share one copy (node_master.py) and split its AdamW.
        self.node = NodeMaster(total, len(self.specs), self.cuda) if local_world()[1] > 1 else None
        master_slab = self.node.master if self.node else pinned_empty(total, torch.float32, self.cuda)
        self.epoch = [0] * len(self.specs)  # AdamW updates submitted per unit (the node's completion counters)
        self._left: dict[tuple[int, int], int] = {}  # (unit, epoch): pieces of that update still running
        self._left_lock = threading.Lock()
        self.adam_elements = 0  # parameters this process has stepped with the host AdamW (all steps)
        self.host_master = (f"one per node, {self.node.local_world} ranks each step 1/{self.node.local_world}"
                            if self.node else "one per process")
        # Each unit's gradient is all-reduced before the host AdamW sees it (DDP's hooks do not fit streamed units).
        self.data_parallel = "per-unit all-reduce" if world_size() > 1 else None
        self.master, self.exp_avg, self.exp_avg_sq = [], [], []
        off = 0
        for ui, spec in enumerate(self.specs):
            master = master_slab[off : off + spec.numel]
            if self.node:
                self.exp_avg.append(self.node.exp_avg[off : off + spec.numel])
                self.exp_avg_sq.append(self.node.exp_avg_sq[off : off + spec.numel])
            off += spec.numel
            self.master.append(master)
            if self.node and not self.node.writes_state:
                continue  # the node's first rank fills the shared master; its moments start as zeros
            if weights is not None:
                for (key, view) in zip(spec.keys, spec.views(master)):
                    view.copy_(weights[key].reshape(view.shape))
            else:  # same per-unit init as build_model on this device, so engines start identical
                ts = [torch.empty(s, dtype=torch.float32, device=device) for s in spec.shapes]
                init_unit_(mcfg, spec, ts, tcfg.seed, ui)
                for view, t in zip(spec.views(master), ts):
                    view.copy_(t)
                del ts
            if not self.node:
                # zeroed now (not lazily by the first AdamW): the page faults stay out of the first steps
                self.exp_avg.append(torch.empty(spec.numel, dtype=torch.float32).zero_())
                self.exp_avg_sq.append(torch.empty(spec.numel, dtype=torch.float32).zero_())
        if self.node:
            self.node.filled()
        max_unit = max(spec.numel for spec in self.specs)
        self.ring = PinnedRing(self.plan.ring_slots, ring_slot_numel(mcfg), dtype, self.cuda)
        self.hstash = None
        if self.plan.grad_stash == "host":  # the GPU cannot hold a step's gradients: a full pinned stash
            slab = pinned_empty(total, dtype, self.cuda)
            self.hstash, o = [], 0
            for spec in self.specs:
                self.hstash.append(slab[o : o + spec.numel])
                o += spec.numel
        self.act_host = None
        self.host_bytes_pinned = (total * 4 + self.ring.nbytes
                                  + (0 if self.hstash is None else total * torch.finfo(dtype).bits // 8))
        n_layer = max(s.numel for s in self.specs[1:]) if len(self.specs) > 1 else 1
        self.dbuf_outer = torch.empty(self.specs[0].numel, dtype=dtype, device=device)
        self.dbuf = [torch.empty(n_layer, dtype=dtype, device=device) for _ in range(2)]
        self._buf_ptr = [b.untyped_storage().data_ptr() for b in self.dbuf]
        self.stage = (torch.empty(min(STAGE_NUMEL, max_unit), dtype=torch.float32, device=device)
                      if self.cuda and dtype != torch.float32 else None)
        self.owner = [-1, -1]  # which unit each layer buffer holds (valid within one step)
        self.buf_free = [None, None]  # compute-stream event after the last use of each buffer
        self.ready = [None, None]  # copy-stream event after the last load into each buffer
        self.h2d_stream = torch.cuda.Stream(device) if self.cuda else None
        self.d2h_stream = torch.cuda.Stream(device) if self.cuda else None
        self.timer = _Timer(self.cuda)
        self.pipe = GradPipe(self.ring, self.d2h_stream, timed=self.cuda)
        self.futures: list[list[Future] | None] = [None] * len(self.specs)
        self.pending: list = [None] * len(self.specs)  # (gradient source, ready event) of this step, per unit
        self.adam_wait = 0.0
        self.adam_time = 0.0
        self.streamed = 0
        self.kept_bytes = 0  # activation bytes autograd saved for kept blocks in the last step (weights excluded)
        self._cur_buf = 0
        self._snap = None  # a checkpoint being written from the host tensors (see snapshot_units)
        self._prepared: _StagingBuffers | None = None  # pages touched ahead of the next snapshot's copies
        self.last_clipped = True  # the first steps of a run usually clip: do not speculate on step 1
        self.speculating = False
        self.compiled_adam = self.cuda and tcfg.cpu_adam_compile and compiled_adamw_available(work_out=False)
        self.step = 0

    # ------------------------------------------------------------------ accounting

    def host_model_bytes(self) -> int:
        """Host bytes the engine holds for the model: master, moments, ring, stash, offloaded activations."""
        moments = sum(m.numel() * 4 for m in self.exp_avg) * 2
        acts = 0 if self.act_host is None else self.act_host.numel() * self.act_host.element_size()
        return self.host_bytes_pinned + moments + acts

    # ------------------------------------------------------------------ transfers

    def _wait_unit(self, ui: int) -> None:
        futs = self.futures[ui]
        if futs is not None:
            t0 = time.perf_counter()
            self.futures[ui] = None
            for fut in futs:
                fut.result()
            if self.node:  # the other ranks of this node step the rest of the unit
                self.node.wait(ui, self.epoch[ui])
            self.adam_wait += time.perf_counter() - t0

    def _load(self, ui: int, dst: torch.Tensor, after=None):
        """Unit ui's master into dst in the compute dtype (on the copy stream); returns the event to wait on."""
        self._wait_unit(ui)
        src = self.master[ui]
        n = src.numel()
        self.streamed += n * src.element_size()
        if not self.cuda:
            dst[:n].copy_(src)
            return None
        with torch.cuda.stream(self.h2d_stream):
            if after is not None:
                self.h2d_stream.wait_event(after)
            tok = self.timer.start("h2d", self.h2d_stream)
            if self.stage is None:
                dst[:n].copy_(src, non_blocking=True)
            else:  # fp32 over PCIe into the staging buffer, cast on the GPU (same stream: serial, no race)
                step = self.stage.numel()
                for s in range(0, n, step):
                    e = min(n, s + step)
                    self.stage[: e - s].copy_(src[s:e], non_blocking=True)
                    dst[s:e].copy_(self.stage[: e - s])
            return self.timer.stop(tok, self.h2d_stream)

    def _layer_buffer(self, li: int):
        """Ensure layer li (unit li+1) is (being) loaded into buffer li % 2; returns the copy's event."""
        b, ui = li % 2, li + 1
        if self.owner[b] != ui:
            self.ready[b] = self._load(ui, self.dbuf[b], self.buf_free[b])
            self.owner[b] = ui
        return self.ready[b]

    def _layer_views(self, li: int):
        return self.specs[li + 1].views(self.dbuf[li % 2][: self.specs[li + 1].numel])

    def _compute_wait(self, ev) -> None:
        if ev is not None:
            torch.cuda.current_stream().wait_event(ev)

    def _event(self):
        if not self.cuda:
            return None
        ev = torch.cuda.Event()
        ev.record()
        return ev

    def _mark_buffer_used(self, li: int) -> None:
        if self.cuda:
            self.buf_free[li % 2] = self._event()

    # ------------------------------------------------------------------ saved-tensor hooks (kept blocks)

    def _pack(self, t: torch.Tensor):
        """A block's weights are not kept: they are replaced by where they sit in the block buffer."""
        b = self._cur_buf
        if t.device == self.dbuf[b].device and t.untyped_storage().data_ptr() == self._buf_ptr[b]:
            return ("w", b, t.storage_offset(), tuple(t.shape), t.stride())
        self.kept_bytes += t.numel() * t.element_size()
        return t

    def _unpack(self, p):
        if isinstance(p, tuple):
            _, b, off, size, stride = p
            return torch.as_strided(self.dbuf[b], size, stride, off)
        return p

    # ------------------------------------------------------------------ offloaded boundaries

    def _offload(self, li: int, xs) -> None:
        """Block li's inputs to pinned host memory (recomputed blocks with boundaries on the host)."""
        rows = sum(x.shape[0] for x in xs)
        if self.act_host is None:  # sized by the first (largest) pass
            shape = (self.n_rc, rows) + tuple(xs[0].shape[1:])
            self.act_host = pinned_empty(math.prod(shape), self.dtype, self.cuda).view(shape)
        if rows > self.act_host.shape[1] or tuple(xs[0].shape[1:]) != tuple(self.act_host.shape[2:]):
            raise ValueError(f"batch of {rows}x{tuple(xs[0].shape[1:])} does not match the planned "
                             f"{tuple(self.act_host.shape[1:])} (batch_size, seq_len)")
        ready = self._event()
        r = 0
        with torch.cuda.stream(self.d2h_stream) if self.cuda else contextlib.nullcontext():
            if self.cuda:
                self.d2h_stream.wait_event(ready)
            tok = self.timer.start("d2h", self.d2h_stream)
            for x in xs:
                self.act_host[li, r : r + x.shape[0]].copy_(x, non_blocking=self.cuda)
                if self.cuda:
                    x.record_stream(self.d2h_stream)
                r += x.shape[0]
            done = self.timer.stop(tok, self.d2h_stream)
            if self.cuda and done is None:
                done = torch.cuda.Event()
                done.record(self.d2h_stream)
        self.saved[li] = ("host", [x.shape[0] for x in xs], done)
        self.streamed += 2 * rows * xs[0][0].numel() * xs[0].element_size()  # down now, up in backward

    def _fetch(self, li: int) -> None:
        """Start copying block li's offloaded inputs back to the GPU (on the copy stream)."""
        entry = self.saved[li]
        if entry is None or entry[0] != "host":
            return
        _, sizes, done = entry
        xs, r = [], 0
        with torch.cuda.stream(self.h2d_stream) if self.cuda else contextlib.nullcontext():
            if self.cuda and done is not None:
                self.h2d_stream.wait_event(done)
            tok = self.timer.start("h2d", self.h2d_stream)
            for n in sizes:  # allocated on the copy stream; record_stream(compute) when used
                xs.append(self.act_host[li, r : r + n].to(self.device, non_blocking=self.cuda))
                r += n
            ev = self.timer.stop(tok, self.h2d_stream)
            if self.cuda and ev is None:
                ev = torch.cuda.Event()
                ev.record(self.h2d_stream)
        self.saved[li] = ("fetched", xs, ev)

    def _boundary_inputs(self, li: int):
        entry = self.saved[li]
        if entry[0] == "host":
            self._fetch(li)
            entry = self.saved[li]
        if entry[0] == "fetched":
            _, xs, ev = entry
            self._compute_wait(ev)
            if self.cuda:
                for x in xs:
                    x.record_stream(torch.cuda.current_stream())
            return xs
        return entry[1]  # ("gpu", xs)

    # ------------------------------------------------------------------ host optimizer

    def _adam_task(self, ui: int, s: int, e: int, lr: float, step: int, scale: float, undo_first: bool,
                   snap, epoch: int, grad: torch.Tensor) -> None:
        """AdamW for elements [s, e) of one unit on the host from their gradient (a ring slot or the stash); with
        undo_first, first revert the speculative unclipped step. Waits for a checkpoint writer still on this unit."""
        if snap is not None:
            snap.wait_released(ui)
        t0 = time.perf_counter()
        t = self.tcfg
        kw = dict(step=step, lr=lr, beta1=t.beta1, beta2=t.beta2, eps=t.eps, weight_decay=t.weight_decay,
                  n_decay=min(max(self.specs[ui].n_decay - s, 0), e - s))
        args = (self.master[ui][s:e], grad, self.exp_avg[ui][s:e], self.exp_avg_sq[ui][s:e])
        if undo_first:
            adamw_undo_flat_(*args, grad_scale=1.0, **kw)
        if self.compiled_adam:
            adamw_flat_compiled_(*args, None, grad_scale=scale, **kw)
        else:
            adamw_flat_(*args, grad_scale=scale, **kw)
        self.adam_time += time.perf_counter() - t0
        with self._left_lock:
            self.adam_elements += e - s
        if epoch:
            self._piece_done(ui, epoch)

    def _piece_done(self, ui: int, epoch: int) -> None:
        with self._left_lock:
            self._left[(ui, epoch)] -= 1
            last = self._left[(ui, epoch)] == 0
            if last:
                del self._left[(ui, epoch)]
        if last:
            self.node.mark(ui, epoch)

    def _submit(self, ui: int, lr: float, step: int, scale: float, undo_first: bool = False) -> None:
        """Queue unit ui's host AdamW; a unit larger than a ring slot (the outer unit) goes in slot-sized pieces
        (AdamW is elementwise, so pieces are exact)."""
        src, ready, via_ring = self.pending[ui]
        n = src.numel()
        lo, hi = self.node.owned(n) if self.node else (0, n)  # on a shared node master: this rank's range only
        piece = self.ring.buffers[0].numel() if via_ring else n
        starts = list(range(lo, hi, piece))
        epoch = 0
        if self.node:
            self.epoch[ui] += 1
            epoch = self.epoch[ui]
            if not starts:
                self.node.mark(ui, epoch)
            with self._left_lock:
                if starts:
                    self._left[(ui, epoch)] = len(starts)
        futs = []
        for s in starts:
            e = min(hi, s + piece)
            fn = functools.partial(self._adam_task, ui, s, e, lr, step, scale, undo_first, self._snap, epoch)
            futs.append(self.pipe.ship(src[s:e], fn, ready, via_ring))
        self.futures[ui] = futs

    def _grad_out(self, ui: int, flat: torch.Tensor, lr: float) -> None:
        """Hold unit ui's gradient (GPU, or the pinned host stash) until the norm is known; speculate if asked."""
        g = flat if flat.dtype == self.dtype else flat.to(self.dtype)
        if self.hstash is not None:
            dst = self.hstash[ui]
            ready = self._event()
            with torch.cuda.stream(self.d2h_stream) if self.cuda else contextlib.nullcontext():
                if self.cuda:
                    self.d2h_stream.wait_event(ready)
                tok = self.timer.start("d2h", self.d2h_stream)
                dst.copy_(g, non_blocking=self.cuda)
                if self.cuda:
                    g.record_stream(self.d2h_stream)
                done = self.timer.stop(tok, self.d2h_stream)
                if self.cuda and done is None:
                    done = torch.cuda.Event()
                    done.record(self.d2h_stream)
            self.pending[ui] = (dst, done, False)
        else:
            self.pending[ui] = (g, self._event(), True)
        self.streamed += g.numel() * g.element_size()
        if self.speculating:
            self._submit(ui, lr, self.step + 1, 1.0)

    def sync(self) -> None:
        """Wait for every pending host optimizer step."""
        for ui in range(len(self.specs)):
            self._wait_unit(ui)

    # ------------------------------------------------------------------ forward / backward

    def _outer_views(self):
        spec = self.specs[0]
        v = spec.views(self.dbuf_outer)
        emb = v[0]
        head = emb if self.cfg.tie_embeddings else v[1]
        return v, emb, head, v[-1]

    def _forward(self, chunks, train: bool):
        """Embedding and all blocks; returns the last boundary. With train, records what backward needs per block
        in self.saved: ("keep", leaves, [(x, y)]), ("gpu", xs) or ("host", ...) for offloaded inputs."""
        self.owner = [-1, -1]
        cfg, dt = self.cfg, self.dtype
        ev = self._load(0, self.dbuf_outer)
        first = self._layer_buffer(0) if cfg.n_layers else None
        self._compute_wait(ev)
        _, emb_w, _, _ = self._outer_views()
        seq = chunks[0][0].shape[1]
        cos, sin = rope_cos_sin(seq, cfg.head_dim, cfg.rope_theta, self.device, dt)
        tok = self.timer.start("compute")
        with torch.no_grad(), autocast_ctx(self.device, dt):
            xs = [embed(ids, emb_w, dt) for ids, _, _ in chunks]
        self.timer.stop(tok)
        self.saved = [None] * cfg.n_layers
        ready = first
        for li in range(cfg.n_layers):
            self._compute_wait(ready)
            views = self._layer_views(li)
            tok = self.timer.start("compute")
            if train and li >= self.n_rc:
                leaves = [v.detach().requires_grad_() for v in views]
                pairs, outs = [], []
                self._cur_buf = li % 2
                with torch.enable_grad(), autocast_ctx(self.device, dt), \
                        torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
                    for x in xs:
                        xi = x.detach().requires_grad_()
                        y = self.block_fn(xi, cos, sin, *leaves)
                        pairs.append((xi, y))
                        outs.append(y.detach())
                self.saved[li] = ("keep", leaves, pairs)
            else:
                if train:
                    if self.plan.boundaries == "host":
                        self._offload(li, xs)
                    else:
                        self.saved[li] = ("gpu", xs)
                with torch.no_grad(), autocast_ctx(self.device, dt):
                    outs = [self.block_fn(x, cos, sin, *views) for x in xs]
            self.timer.stop(tok)
            self._mark_buffer_used(li)
            if li + 1 < cfg.n_layers:
                ready = self._layer_buffer(li + 1)
            xs = outs
        return xs, (cos, sin)

    def _accumulate(self, li: int, flat, grads):
        """Add one chunk's weight gradients of block li into its fp32 flat gradient (allocated on first use)."""
        spec = self.specs[li + 1]
        if flat is None:
            flat = torch.empty(spec.numel, dtype=torch.float32, device=self.device)
            for view, g in zip(spec.views(flat), grads):
                view.copy_(g)
        else:
            for view, g in zip(spec.views(flat), grads):
                view.add_(g)
        return flat

    def _pass(self, chunks, n_targets: int, lr: float, outer_grad, loss_total, sqnorm, acc, final: bool) -> None:
        """Forward, head and backward of one pass over `chunks`; on the final pass each unit's gradient (summed
        over passes in acc) is counted into the norm and handed to _grad_out."""
        cfg, dt, dev = self.cfg, self.dtype, self.device
        last, (cos, sin) = self._forward(chunks, train=True)

        # Head: loss and gradients w.r.t. the last boundary and the outer weights.
        spec0 = self.specs[0]
        og = spec0.views(outer_grad)
        views, emb_w, head_w, norm_w = self._outer_views()
        head_leaf = head_w.detach().requires_grad_()
        norm_leaf = norm_w.detach().requires_grad_()
        head_gi = 0 if cfg.tie_embeddings else 1
        gys = []
        tok = self.timer.start("compute")
        for x, (_, tgt, mask) in zip(last, chunks):
            xl = x.detach().requires_grad_()
            with autocast_ctx(dev, dt):
                loss = self.head_fn(cfg, xl, norm_leaf, head_leaf, tgt, mask, n_targets)
            gx, gh, gn = torch.autograd.grad(loss, [xl, head_leaf, norm_leaf])
            og[head_gi].add_(gh)
            og[-1].add_(gn)
            gys.append(gx)
            loss_total += loss.detach()
        self.timer.stop(tok)
        del last

        # Blocks in reverse: backprop through the kept graph, or recompute from the saved input and backprop.
        for li in reversed(range(cfg.n_layers)):
            ready = self._layer_buffer(li)
            if li > 0 and li - 1 < self.n_rc:
                self._fetch(li - 1)  # offloaded inputs of the next block come back while this one computes
            self._compute_wait(ready)
            entry = self.saved[li]
            tok = self.timer.start("compute")
            flat = acc[li + 1]
            if entry[0] == "keep":
                _, leaves, pairs = entry
                self._cur_buf = li % 2
                with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
                    for c, (xi, y) in enumerate(pairs):
                        grads = torch.autograd.grad(y, [xi] + leaves, gys[c])
                        gys[c] = grads[0]
                        flat = self._accumulate(li, flat, grads[1:])
                del pairs
            else:
                leaves = [v.detach().requires_grad_() for v in self._layer_views(li)]
                xs = self._boundary_inputs(li)
                for c, x in enumerate(xs):
                    xi = x.detach().requires_grad_()
                    with torch.enable_grad(), autocast_ctx(dev, dt):
                        y = self.block_fn(xi, cos, sin, *leaves)
                    grads = torch.autograd.grad(y, [xi] + leaves, gys[c])
                    gys[c] = grads[0]
                    flat = self._accumulate(li, flat, grads[1:])
                del xs
            self.saved[li] = None
            if final:
                all_reduce_sum_([flat])  # data parallel: the global gradient before the norm and the host AdamW
                sqnorm += flat.pow(2).sum()
            self.timer.stop(tok)
            self._mark_buffer_used(li)
            if li > 0:
                self._layer_buffer(li - 1)  # prefetch into the buffer freed by layer li + 1
            if final:
                acc[li + 1] = None
                self._grad_out(li + 1, flat, lr)
            else:
                acc[li + 1] = flat
            del flat, leaves, entry

        # Embedding backward (tied: accumulates onto the head's gradient).
        emb_leaf = emb_w.detach().requires_grad_()
        tok = self.timer.start("compute")
        for (ids, _, _), gy in zip(chunks, gys):
            with autocast_ctx(dev, dt):
                e = embed(ids, emb_leaf, dt)
            (ge,) = torch.autograd.grad(e, [emb_leaf], gy)
            og[0].add_(ge)
        if final:
            all_reduce_sum_([outer_grad])
            sqnorm += outer_grad.pow(2).sum()
        self.timer.stop(tok)
        if final:
            self._grad_out(0, outer_grad, lr)

    def train_step(self, batch: Batch, lr: float) -> StepStats:
        t_start = time.perf_counter()
        self.adam_wait, self.streamed, self.kept_bytes = 0.0, 0, 0
        d2h_before = self.pipe.d2h_s
        mode = self.tcfg.speculative_adam
        # Speculating on a clipped step costs two extra passes (undo, redo): guess from the last step.
        self.speculating = mode == "always" or (mode == "auto" and not self.last_clipped)
        dev = self.device
        n_targets = max(1, batch.n_targets)
        chunks = to_device(split_batch(batch, self.micro), dev)
        per = -(-len(chunks) // self.plan.passes)
        groups = [chunks[i : i + per] for i in range(0, len(chunks), per)]
        outer_grad = torch.zeros(self.specs[0].numel, dtype=torch.float32, device=dev)
        loss_total = torch.zeros((), dtype=torch.float32, device=dev)
        sqnorm = torch.zeros((), dtype=torch.float32, device=dev)
        acc: list = [None] * len(self.specs)  # fp32 gradient sums over passes (multi-pass plans)
        for gi, group in enumerate(groups):
            self._pass(group, n_targets, lr, outer_grad, loss_total, sqnorm, acc, gi == len(groups) - 1)
        del acc, outer_grad, chunks, groups
        all_reduce_sum_([loss_total])

        norm = math.sqrt(float(sqnorm.item()))  # synchronises the compute stream
        loss_v = float(loss_total.item())
        scale = 1.0
        if self.tcfg.grad_clip > 0:
            scale = min(1.0, self.tcfg.grad_clip / (norm + 1e-6))
        self.step += 1
        if self.cuda:
            self.h2d_stream.synchronize()
            self.d2h_stream.synchronize()
        timings = self.timer.totals()
        clipped = scale < 1.0
        self.last_clipped = clipped
        if self.speculating:
            # Units were stepped unclipped during backward; redo them only if the norm was clipped.
            if clipped:
                for ui in range(len(self.specs)):  # forward order: the next step needs the outer unit first
                    self._submit(ui, lr, self.step, scale, True)
        else:
            for ui in range(len(self.specs)):
                self._submit(ui, lr, self.step, scale)
        self.pending = [None] * len(self.specs)  # the pipe holds what it still has to copy
        if not self.cuda:
            self.sync()
        prev_adam, self.adam_time = self.adam_time, 0.0
        wall = time.perf_counter() - t_start
        return StepStats(
            loss=loss_v, grad_norm=norm, wall_s=wall,
            compute_s=timings.get("compute", wall if not self.cuda else 0.0),
            h2d_s=timings.get("h2d", 0.0), d2h_s=timings.get("d2h", 0.0) + self.pipe.d2h_s - d2h_before,
            cpu_adam_s=prev_adam, adam_wait_s=self.adam_wait, streamed_bytes=self.streamed,
            extra={"clipped": clipped, "speculated": self.speculating, "kept_gb": round(self.kept_bytes / 2**30, 3),
                   "ring_max_in_use": self.ring.max_in_use, "ring_wait_s": round(self.pipe.slot_wait_s, 4)},
        )

    @torch.no_grad()
    def eval_loss(self, batch: Batch) -> float:
        n_targets = max(1, batch.n_targets)
        chunks = to_device(split_batch(batch, self.micro), self.device)
        last, _ = self._forward(chunks, train=False)
        _, _, head_w, norm_w = self._outer_views()
        total = 0.0
        for x, (_, tgt, mask) in zip(last, chunks):
            with autocast_ctx(self.device, self.dtype):
                total += float(self.head_fn(self.cfg, x, norm_w, head_w, tgt, mask, n_targets).item())
        return total

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Views of the host master (no copy: a copy would double host memory); valid until the next step."""
        self.sync()
        out = {}
        for spec, m in zip(self.specs, self.master):
            out.update(dict(zip(spec.keys, spec.views(m))))
        return out

    def optimizer_state_dict(self) -> dict[str, torch.Tensor]:
        """Views of the moments, like state_dict."""
        self.sync()
        # The speculation guess is kept so a resumed run takes the same (rounding-level) path as a straight one.
        out = {"step": torch.tensor(self.step, dtype=torch.int64),
               "streaming.last_clipped": torch.tensor(int(self.last_clipped), dtype=torch.int64)}
        for spec, m, v in zip(self.specs, self.exp_avg, self.exp_avg_sq):
            for k, a, b in zip(spec.keys, spec.views(m), spec.views(v)):
                out[f"{k}.exp_avg"] = a
                out[f"{k}.exp_avg_sq"] = b
        return out

    def snapshot_units(self, copy_ahead: bool = True) -> "_Snapshot":
        """The host state as of now, handed to a checkpoint writer unit by unit. Within checkpoint_stage_gb, a
        thread copies the units while the next step computes on the GPU (copy_ahead), and the optimizer copies
        any unit it reaches before both that thread and the writer (see _Snapshot)."""
        if self._snap is not None:
            self._snap.wait_all()
        prepared, self._prepared = self._prepared, None
        self._snap = _Snapshot(self, stage_bytes=checkpoint_stage_bytes(self.tcfg.checkpoint_stage_gb),
                               prepared=prepared)
        if copy_ahead:
            self._snap.start_copying_ahead()
        return self._snap

    def prepare_snapshot(self) -> None:
        """Allocate and touch the copies of the next snapshot now, on a thread, while training goes on: a copy
        into fresh memory runs at page-fault speed (3.8-4.5 GB/s on the lent H200, against 67.7 GB/s into
        touched memory), too slow to finish inside the step after a snapshot. Within checkpoint_stage_gb; held
        until the next snapshot_units() takes them."""
        if self._prepared is None and self._snap is None and self.can_snapshot:
            self._prepared = _StagingBuffers(self, checkpoint_stage_bytes(self.tcfg.checkpoint_stage_gb))

    def unit_state(self, ui: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unit ui's host state: its fp32 master and the two AdamW moments."""
        return self.master[ui], self.exp_avg[ui], self.exp_avg_sq[ui]

    def unit_state_bytes(self, ui: int) -> int:
        return sum(t.numel() * t.element_size() for t in self.unit_state(ui))

    def snapshot_bytes(self) -> int:
        """Host bytes a checkpoint copies at most: every unit's master and moments."""
        return sum(self.unit_state_bytes(ui) for ui in range(len(self.specs)))

    @property
    def can_snapshot(self) -> bool:
        """A background checkpoint reads the host state while training goes on: not when other ranks step it."""
        return self.node is None

    def load(self, weights, optim) -> None:
        self.sync()
        for ui, spec in enumerate(self.specs):
            if self.node and not self.node.writes_state:
                continue
            for k, view in zip(spec.keys, spec.views(self.master[ui])):
                view.copy_(weights[k].reshape(view.shape))
            if optim is not None:
                for k, a, b in zip(spec.keys, spec.views(self.exp_avg[ui]), spec.views(self.exp_avg_sq[ui])):
                    a.copy_(optim[f"{k}.exp_avg"].reshape(a.shape))
                    b.copy_(optim[f"{k}.exp_avg_sq"].reshape(b.shape))
        if optim is not None:
            self.step = int(optim["step"])
            if "streaming.last_clipped" in optim:
                self.last_clipped = bool(int(optim["streaming.last_clipped"]))
        if self.node:
            self.node.filled()

    def close(self) -> None:
        try:
            self.sync()
        finally:
            self.pipe.close()



def checkpoint_stage_bytes(stage_gb: float) -> int:
    """Host bytes a background checkpoint may copy: stage_gb, else half of MemAvailable now (0 if unknown)."""
    if stage_gb > 0:
        return int(stage_gb * 2**30)
    return (meminfo_bytes("MemAvailable") or 0) // 2


class _StagingBuffers:
    """Copies-to-be of the engine's units (master and moments), allocated and touched on a thread from the last
    unit back (the order the copier thread copies), within budget bytes. take(ui) hands a unit's buffers to a
    snapshot once they are ready (None otherwise); stop() ends the thread after the unit it is on."""

    def __init__(self, engine: StreamingEngine, budget: int):
        self._engine = engine
        self._ready: dict[int, tuple] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.bytes = 0
        self._budget = budget
        self._thread = threading.Thread(target=self._fill, name="checkpoint-prefault", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        e = self._engine
        for ui in reversed(range(len(e.specs))):
            n = e.unit_state_bytes(ui)
            with self._lock:
                if self._closed:
                    return
                if self.bytes + n > self._budget:
                    continue
            bufs = tuple(torch.empty_like(t).zero_() for t in e.unit_state(ui))  # zero_() touches every page
            with self._lock:
                if self._closed:  # a snapshot started meanwhile and no longer looks here
                    return
                self._ready[ui] = bufs
                self.bytes += n

    def take(self, ui: int) -> tuple | None:
        with self._lock:
            return self._ready.pop(ui, None)

    def has(self, ui: int) -> bool:
        with self._lock:
            return ui in self._ready

    def stop(self) -> None:
        with self._lock:
            self._closed = True

    def close(self) -> None:
        """Stop, and let go of the buffers no snapshot took."""
        with self._lock:
            self._closed = True
            self._ready.clear()


class _Snapshot:
    """The engine's host tensors as of one step boundary, for a checkpoint writer on another thread.

    take(ui) waits for the optimizer steps of unit ui queued before the snapshot, then returns its master and
    moments. A host AdamW step queued after the snapshot that reaches a unit the writer has not taken yet copies
    that unit first (copy-on-write, within stage_bytes of host memory) and goes on; the writer then writes the
    copy. Only a unit the writer is in the middle of, or one past the staging budget, makes the optimizer wait
    (wait_released) until the writer release()s it. The writer goes in forward order.

    Copying on the optimizer's way puts the copy on the step's critical path, and a copy into fresh memory runs at
    page-fault speed: at 1.2b on the H200, 9 GB took the optimizer 2.4 s (3.8 GB/s), +1.4 steps. So a copier
    thread (start_copying_ahead) copies the units from the last one back, while the next step's forward and
    backward run on the GPU, meeting the writer that comes from the front; the optimizer copies only what
    neither has reached."""

    def __init__(self, engine: StreamingEngine, stage_bytes: int = 0, prepared: _StagingBuffers | None = None):
        self.engine = engine
        self._prepared = prepared
        if prepared is not None:
            prepared.stop()  # units it has not touched by now are copied into fresh memory
        self.layout = [list(zip(spec.keys, spec.shapes)) for spec in engine.specs]
        self.scalars = {"step": torch.tensor(engine.step, dtype=torch.int64),
                        "streaming.last_clipped": torch.tensor(int(engine.last_clipped), dtype=torch.int64)}
        self._before = [list(f) if f else [] for f in engine.futures]
        n = len(engine.specs)
        self._released = [False] * n
        self._writing = [False] * n
        self._staged: list[tuple | None] = [None] * n
        self._staging = [False] * n
        self._charged = [False] * n  # the unit's copy counts against the budget (no prepared buffers)
        self._stage_left = stage_bytes
        self._cond = threading.Condition()
        self.gate_wait_s = 0.0
        self.staged_units = 0
        self.staged_bytes = 0
        self.stage_s = 0.0  # the optimizer thread's time spent copying units
        self.prepared_units = 0  # copies that went into buffers touched ahead (prepare_snapshot)
        self.ahead_units = 0  # units the copier thread copied, and its time
        self.ahead_s = 0.0
        self._copier: threading.Thread | None = None

    def _views(self, ui: int, tensors) -> tuple:
        spec = self.engine.specs[ui]
        return tuple(dict(zip(spec.keys, spec.views(t))) for t in tensors)

    def take(self, ui: int):
        for fut in self._before[ui]:
            fut.result()
        with self._cond:
            self._cond.wait_for(lambda: not self._staging[ui])
            if self._staged[ui] is not None:
                return self._views(ui, self._staged[ui])
            self._writing[ui] = True
        return self._views(ui, self.engine.unit_state(ui))

    def release(self, ui: int) -> None:
        with self._cond:
            self._released[ui] = True
            self._staged[ui] = None  # the copy's memory goes back as soon as it is written
            self._cond.notify_all()
        if all(self._released):
            if self._prepared is not None:
                self._prepared.close()
            if self.engine._snap is self:
                self.engine._snap = None

    def release_all(self) -> None:
        for ui in range(len(self._released)):
            if not self._released[ui]:
                self.release(ui)

    abort = release_all

    def _nbytes(self, ui: int) -> int:
        return self.engine.unit_state_bytes(ui)

    def _can_stage(self, ui: int) -> bool:
        """Under the lock: ui is neither written, being written, copied nor being copied, and its copy fits (in
        buffers prepared for it, or in the staging budget)."""
        return (not self._released[ui] and self._staged[ui] is None and not self._writing[ui]
                and not self._staging[ui]
                and (self._nbytes(ui) <= self._stage_left or (self._prepared is not None and self._prepared.has(ui))))

    def _claim(self, ui: int) -> None:
        self._staging[ui] = True
        self._charged[ui] = self._prepared is None or not self._prepared.has(ui)
        if self._charged[ui]:
            self._stage_left -= self._nbytes(ui)

    def _stage(self, ui: int, ahead: bool = False) -> None:
        """Copy unit ui (claimed under the lock) outside the lock: the writer goes on with other units."""
        t0 = time.perf_counter()
        bufs = self._prepared.take(ui) if self._prepared is not None else None
        if bufs is not None:
            copies = tuple(b.copy_(t) for b, t in zip(bufs, self.engine.unit_state(ui)))
        else:
            copies = tuple(t.clone() for t in self.engine.unit_state(ui))
        with self._cond:
            if bufs is not None:
                self.prepared_units += 1
            self._staged[ui] = copies
            self._staging[ui] = False
            self.staged_units += 1
            self.staged_bytes += self._nbytes(ui)
            if ahead:
                self.ahead_units += 1
                self.ahead_s += time.perf_counter() - t0
            else:
                self.stage_s += time.perf_counter() - t0
            self._cond.notify_all()

    def start_copying_ahead(self) -> None:
        self._copier = threading.Thread(target=self._copy_ahead, name="checkpoint-copier", daemon=True)
        self._copier.start()

    def _copy_ahead(self) -> None:
        """Last unit first: the speculative host AdamW steps units in backward order, and the writer starts at the
        front. A unit is copied once its optimizer steps queued before the snapshot have landed; the claim keeps
        the optimizer's next step on it waiting (wait_released) until the copy is in place."""
        for ui in reversed(range(len(self._released))):
            with self._cond:
                if not self._can_stage(ui):
                    continue
                self._claim(ui)
            try:
                for fut in self._before[ui]:
                    fut.result()
                self._stage(ui, ahead=True)
            except BaseException:
                with self._cond:  # no copy: the writer and the optimizer fall back to the live unit
                    self._staging[ui] = False
                    if self._charged[ui]:
                        self._stage_left += self._nbytes(ui)
                    self._cond.notify_all()
                raise

    def wait_released(self, ui: int) -> None:
        """Called by the host AdamW before it changes unit ui: returns once the snapshot no longer needs the live
        tensors (written, or copied here).

        When the writer holds ui, the optimizer copies the unit after it while it waits. Otherwise the writer,
        slower than the optimizer, takes each next unit just before the optimizer reaches it, and the two go on in
        lockstep at the writer's pace, never copying (seen at 1.2b on the H200: 2.7 s of waits, nothing copied).
        A unit that can still be copied is in the snapshot's state: the optimizer runs its steps in order on one
        thread, so every step queued before the snapshot is done, and a unit it has changed since was written or
        copied before that (and cannot be copied again)."""
        with self._cond:
            if self._released[ui] or self._staged[ui] is not None:
                return
            mine = self._can_stage(ui)
            if mine:
                self._claim(ui)
            nxt = ui + 1
            ahead = nxt if not mine and nxt < len(self._released) and self._can_stage(nxt) else None
            if ahead is not None:
                self._claim(ahead)
        if mine:
            self._stage(ui)
            return
        t0 = time.perf_counter()
        if ahead is not None:
            self._stage(ahead)
        with self._cond:
            self._cond.wait_for(lambda: self._released[ui] or self._staged[ui] is not None)
        self.gate_wait_s += time.perf_counter() - t0

    def wait_all(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: all(self._released))
