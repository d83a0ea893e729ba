"""Streaming engine: fp32 master weights and AdamW moments live in host memory; layers stream through the GPU.

Per step:
  forward   the outer unit (embedding, final norm, head) is copied to the device; each block's working copy
            (bf16 on cuda) is copied host-to-device on a copy stream into one of two device buffers while the
            previous block computes. The whole batch (in micro-chunks) passes one block before the next; only
            block-boundary activations are kept.
  head      loss and its gradient w.r.t. the last boundary activation and the head weights.
  backward  blocks in reverse: recompute the block from its saved input, backprop, send the flat
            gradient device-to-host on a second stream. No full-model gradient exists on the device.
  optimizer the global grad norm is known only when backward ends (exact clipping), so each unit's CPU AdamW
            step runs on a worker thread from then on, in forward order; the next step's forward waits
            only for the unit it is about to load, so the host optimizer overlaps GPU work on other layers.

Host memory per parameter: fp32 master 4 + exp_avg 4 + exp_avg_sq 4 + pinned bf16 working copy 2 +
pinned bf16 gradient 2 = 16 bytes (on cpu/fp32 the working copy is the master itself).
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from plasma_pipeline.train.config import ModelConfig, TrainConfig
from plasma_pipeline.train.data import Batch
from plasma_pipeline.train.engine import StepStats, autocast_ctx, split_batch, to_device
from plasma_pipeline.train.model import embed, init_unit_, make_block_fn, make_head_fn, rope_cos_sin, unit_specs
from plasma_pipeline.train.optim import adamw_flat_, adamw_flat_compiled_, adamw_undo_flat_, compiled_adamw_available


def _pinned_empty(numel: int, dtype: torch.dtype, cuda: bool) -> torch.Tensor:
    """Host tensor page-locked with cudaHostRegister (exact size); pin_memory=True as a fallback."""
    t = torch.empty(numel, dtype=dtype)
    if not cuda:
        return t
    t.zero_()  # touch the pages so registration does not race first use
    try:
        rc = torch.cuda.cudart().cudaHostRegister(t.data_ptr(), t.numel() * t.element_size(), 0)
        if int(rc) == 0 and t.is_pinned():
            _REGISTERED.append(t)  # never unregistered: lives as long as the process
            return t
    except Exception:
        pass
    return torch.empty(numel, dtype=dtype, pin_memory=True)


_REGISTERED: list[torch.Tensor] = []


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
                 weights: dict[str, torch.Tensor] | None = None):
        self.cfg, self.tcfg, self.device, self.dtype = mcfg, tcfg, device, dtype
        self.cuda = device.type == "cuda"
        self.specs = unit_specs(mcfg)
        self.block_fn = make_block_fn(mcfg, tcfg.compile and self.cuda)
        self.head_fn = make_head_fn(tcfg.compile and self.cuda)
        if tcfg.cpu_adam_threads > 0:
            torch.set_num_threads(tcfg.cpu_adam_threads)
        elif self.cuda:  # leave cores for the thread that launches GPU work
            torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) - 2)))
        self.alias = dtype == torch.float32 and not self.cuda  # working copy is the master itself
        total = sum(spec.numel for spec in self.specs)
        # Two host slabs (bf16 working weights, bf16 grads), page-locked exactly (no power-of-two rounding).
        work_slab = None if self.alias else _pinned_empty(total, dtype, self.cuda)
        grad_slab = _pinned_empty(total, dtype, self.cuda)
        self.master, self.exp_avg, self.exp_avg_sq, self.work, self.hgrad = [], [], [], [], []
        off = 0
        for ui, spec in enumerate(self.specs):
            master = torch.empty(spec.numel, dtype=torch.float32)
            if weights is not None:
                for (key, view) in zip(spec.keys, spec.views(master)):
                    view.copy_(weights[key].reshape(view.shape))
            else:  # same per-unit init as build_model on this device, so engines start identical
                ts = [torch.empty(s, dtype=torch.float32, device=device) for s in spec.shapes]
                init_unit_(mcfg, spec, ts, tcfg.seed, ui)
                for view, t in zip(spec.views(master), ts):
                    view.copy_(t)
                del ts
            self.master.append(master)
            self.exp_avg.append(torch.zeros(spec.numel, dtype=torch.float32))
            self.exp_avg_sq.append(torch.zeros(spec.numel, dtype=torch.float32))
            if self.alias:
                self.work.append(master)
            else:
                w = work_slab[off : off + spec.numel]
                w.copy_(master)
                self.work.append(w)
            self.hgrad.append(grad_slab[off : off + spec.numel])
            off += spec.numel
        n_layer = max(s.numel for s in self.specs[1:]) if len(self.specs) > 1 else 1
        self.dbuf_outer = torch.empty(self.specs[0].numel, dtype=dtype, device=device)
        self.dbuf = [torch.empty(n_layer, dtype=dtype, device=device) for _ in range(2)]
        self.owner = [-1, -1]  # which unit each layer buffer holds (valid within one step)
        self.buf_free = [None, None]  # compute-stream event after the last use of each buffer
        self.ready = [None, None]  # copy-stream event after the last load into each buffer
        self.h2d_stream = torch.cuda.Stream(device) if self.cuda else None
        self.d2h_stream = torch.cuda.Stream(device) if self.cuda else None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="host-adamw")
        self.futures: list[Future | None] = [None] * len(self.specs)
        self.d2h_done: list = [None] * len(self.specs)
        self.timer = _Timer(self.cuda)
        self.adam_wait = 0.0
        self.adam_time = 0.0
        self.streamed = 0
        self.last_clipped = True  # the first steps of a run usually clip: do not speculate on step 1
        self.speculating = False
        self.compiled_adam = self.cuda and not self.alias and tcfg.cpu_adam_compile and compiled_adamw_available()
        self.step = 0

    # ------------------------------------------------------------------ transfers

    def _wait_unit(self, ui: int) -> None:
        fut = self.futures[ui]
        if fut is not None:
            t0 = time.perf_counter()
            fut.result()
            self.adam_wait += time.perf_counter() - t0
            self.futures[ui] = None

    def _load(self, ui: int, dst: torch.Tensor, after=None):
        """Copy unit ui's working weights into dst (on the copy stream); returns the event to wait on."""
        self._wait_unit(ui)
        n = self.specs[ui].numel
        self.streamed += n * self.work[ui].element_size()
        if not self.cuda:
            dst[:n].copy_(self.work[ui])
            return None
        with torch.cuda.stream(self.h2d_stream):
            if after is not None:
                self.h2d_stream.wait_event(after)
            tok = self.timer.start("h2d", self.h2d_stream)
            dst[:n].copy_(self.work[ui], non_blocking=True)
            return self.timer.stop(tok, self.h2d_stream)

    def _layer_buffer(self, li: int, after_compute=None):
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

    def _mark_buffer_used(self, li: int) -> None:
        if self.cuda:
            ev = torch.cuda.Event()
            ev.record()
            self.buf_free[li % 2] = ev

    def _send_grad(self, ui: int, grad: torch.Tensor) -> None:
        """Device-to-host copy of a unit's flat gradient on the second stream."""
        g = grad.to(self.dtype)
        self.streamed += g.numel() * g.element_size()
        if not self.cuda:
            self.hgrad[ui].copy_(g)
            return
        ready = torch.cuda.Event()
        ready.record()
        with torch.cuda.stream(self.d2h_stream):
            self.d2h_stream.wait_event(ready)
            tok = self.timer.start("d2h", self.d2h_stream)
            self.hgrad[ui].copy_(g, non_blocking=True)
            self.d2h_done[ui] = self.timer.stop(tok, self.d2h_stream)
        g.record_stream(self.d2h_stream)

    # ------------------------------------------------------------------ host optimizer

    def _adam_task(self, ui: int, lr: float, step: int, scale: float, undo_first: bool = False) -> None:
        """AdamW for one unit on the host; with undo_first, first revert the speculative unclipped step."""
        if self.d2h_done[ui] is not None:
            self.d2h_done[ui].synchronize()
        t0 = time.perf_counter()
        t = self.tcfg
        kw = dict(step=step, lr=lr, beta1=t.beta1, beta2=t.beta2, eps=t.eps, weight_decay=t.weight_decay,
                  n_decay=self.specs[ui].n_decay)
        args = (self.master[ui], self.hgrad[ui], self.exp_avg[ui], self.exp_avg_sq[ui])
        if undo_first:
            adamw_undo_flat_(*args, grad_scale=1.0, **kw)
        if self.compiled_adam:
            adamw_flat_compiled_(*args, self.work[ui], grad_scale=scale, **kw)
        else:
            adamw_flat_(*args, grad_scale=scale, work_out=None if self.alias else self.work[ui], **kw)
        self.adam_time += time.perf_counter() - t0

    def _speculate(self, ui: int, lr: float) -> None:
        """Step unit ui now, assuming the global grad norm will not be clipped (checked when backward ends)."""
        if self.speculating:
            self.futures[ui] = self.pool.submit(self._adam_task, ui, lr, self.step + 1, 1.0)

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

    def _forward(self, chunks, keep: bool):
        """Embedding and all blocks without grad; returns boundary activations (all if keep, else last)."""
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
        bounds = [xs]
        ready = first
        for li in range(cfg.n_layers):
            self._compute_wait(ready)
            views = self._layer_views(li)
            tok = self.timer.start("compute")
            with torch.no_grad(), autocast_ctx(self.device, dt):
                xs = [self.block_fn(x, cos, sin, *views) for x in xs]
            self.timer.stop(tok)
            self._mark_buffer_used(li)
            if li + 1 < cfg.n_layers:
                ready = self._layer_buffer(li + 1)
            if keep:
                bounds.append(xs)
            else:
                bounds = [xs]
        return bounds, (cos, sin)

    def train_step(self, batch: Batch, lr: float) -> StepStats:
        t_start = time.perf_counter()
        self.adam_wait, self.streamed = 0.0, 0
        mode = self.tcfg.speculative_adam
        # Speculating on a clipped step costs two extra passes (undo, redo): guess from the last step.
        self.speculating = mode == "always" or (mode == "auto" and not self.last_clipped)
        cfg, dt, dev = self.cfg, self.dtype, self.device
        n_targets = max(1, batch.n_targets)
        chunks = to_device(split_batch(batch, self.tcfg.micro_batch), dev)
        bounds, (cos, sin) = self._forward(chunks, keep=True)

        # Head: loss and gradients w.r.t. the last boundary and the outer weights.
        spec0 = self.specs[0]
        outer_grad = torch.zeros(spec0.numel, dtype=torch.float32, device=dev)
        og = spec0.views(outer_grad)
        views, emb_w, head_w, norm_w = self._outer_views()
        head_leaf = head_w.detach().requires_grad_()
        norm_leaf = norm_w.detach().requires_grad_()
        head_gi = 0 if cfg.tie_embeddings else 1
        loss_total = torch.zeros((), dtype=torch.float32, device=dev)
        sqnorm = torch.zeros((), dtype=torch.float32, device=dev)
        gys = []
        tok = self.timer.start("compute")
        for x, (_, tgt, mask) in zip(bounds[-1], chunks):
            xl = x.detach().requires_grad_()
            with autocast_ctx(dev, dt):
                loss = self.head_fn(cfg, xl, norm_leaf, head_leaf, tgt, mask, n_targets)
            gx, gh, gn = torch.autograd.grad(loss, [xl, head_leaf, norm_leaf])
            og[head_gi].add_(gh)
            og[-1].add_(gn)
            gys.append(gx)
            loss_total += loss.detach()
        self.timer.stop(tok)
        bounds.pop()

        # Blocks in reverse: recompute, backprop, ship the gradient to the host.
        for li in reversed(range(cfg.n_layers)):
            ready = self._layer_buffer(li)
            self._compute_wait(ready)
            leaves = [v.detach().requires_grad_() for v in self._layer_views(li)]
            tok = self.timer.start("compute")
            flat = None
            xs = bounds.pop()
            for c, x in enumerate(xs):
                xi = x.detach().requires_grad_()
                with torch.enable_grad(), autocast_ctx(dev, dt):
                    y = self.block_fn(xi, cos, sin, *leaves)
                grads = torch.autograd.grad(y, [xi] + leaves, gys[c])
                gys[c] = grads[0]
                g = torch.cat([t.reshape(-1).float() for t in grads[1:]])
                flat = g if flat is None else flat.add_(g)
            del xs
            sqnorm += flat.pow(2).sum()
            self.timer.stop(tok)
            self._mark_buffer_used(li)
            if li > 0:
                self._layer_buffer(li - 1)  # prefetch into the buffer freed by layer li + 1
            self._send_grad(li + 1, flat)
            self._speculate(li + 1, lr)
            del flat, leaves

        # Embedding backward (tied: accumulates onto the head's gradient).
        emb_leaf = emb_w.detach().requires_grad_()
        tok = self.timer.start("compute")
        for (ids, _, _), gy in zip(chunks, gys):
            with autocast_ctx(dev, dt):
                e = embed(ids, emb_leaf, dt)
            (ge,) = torch.autograd.grad(e, [emb_leaf], gy)
            og[0].add_(ge)
        sqnorm += outer_grad.pow(2).sum()
        self.timer.stop(tok)
        self._send_grad(0, outer_grad)
        self._speculate(0, lr)
        del gys, outer_grad, og

        norm = math.sqrt(float(sqnorm.item()))  # synchronises the compute stream
        loss_v = float(loss_total.item())
        scale = 1.0
        if self.tcfg.grad_clip > 0:
            scale = min(1.0, self.tcfg.grad_clip / (norm + 1e-6))
        self.step += 1
        if self.cuda:
            self.d2h_stream.synchronize()
        timings = self.timer.totals()
        clipped = scale < 1.0
        self.last_clipped = clipped
        if self.speculating:
            # Units were stepped unclipped during backward; redo them only if the norm was clipped.
            if clipped:
                for ui in range(len(self.specs)):  # forward order: the next step needs the outer unit first
                    self.futures[ui] = self.pool.submit(self._adam_task, ui, lr, self.step, scale, True)
        else:
            for ui in range(len(self.specs)):
                self.futures[ui] = self.pool.submit(self._adam_task, ui, lr, self.step, scale)
        if not self.cuda:
            self.sync()
        prev_adam, self.adam_time = self.adam_time, 0.0
        wall = time.perf_counter() - t_start
        return StepStats(
            loss=loss_v, grad_norm=norm, wall_s=wall,
            compute_s=timings.get("compute", wall if not self.cuda else 0.0),
            h2d_s=timings.get("h2d", 0.0), d2h_s=timings.get("d2h", 0.0),
            cpu_adam_s=prev_adam, adam_wait_s=self.adam_wait, streamed_bytes=self.streamed,
            extra={"clipped": clipped, "speculated": self.speculating},
        )

    @torch.no_grad()
    def eval_loss(self, batch: Batch) -> float:
        n_targets = max(1, batch.n_targets)
        chunks = to_device(split_batch(batch, self.tcfg.micro_batch), self.device)
        bounds, _ = self._forward(chunks, keep=False)
        _, _, head_w, norm_w = self._outer_views()
        total = 0.0
        for x, (_, tgt, mask) in zip(bounds[-1], chunks):
            with autocast_ctx(self.device, self.dtype):
                total += float(self.head_fn(self.cfg, x, norm_w, head_w, tgt, mask, n_targets).item())
        return total

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, torch.Tensor]:
        self.sync()
        out = {}
        for spec, m in zip(self.specs, self.master):
            out.update({k: v.clone() for k, v in zip(spec.keys, spec.views(m))})
        return out

    def optimizer_state_dict(self) -> dict[str, torch.Tensor]:
        self.sync()
        # The speculation guess is kept so a resumed run takes the same (rounding-level) path as a straight one.
        out = {"step": torch.tensor(self.step, dtype=torch.int64),
               "streaming.last_clipped": torch.tensor(int(self.last_clipped), dtype=torch.int64)}
        for spec, m, v in zip(self.specs, self.exp_avg, self.exp_avg_sq):
            for k, a, b in zip(spec.keys, spec.views(m), spec.views(v)):
                out[f"{k}.exp_avg"] = a.clone()
                out[f"{k}.exp_avg_sq"] = b.clone()
        return out

    def load(self, weights, optim) -> None:
        self.sync()
        for ui, spec in enumerate(self.specs):
            for k, view in zip(spec.keys, spec.views(self.master[ui])):
                view.copy_(weights[k].reshape(view.shape))
            if not self.alias:
                self.work[ui].copy_(self.master[ui])
            if optim is not None:
                for k, a, b in zip(spec.keys, spec.views(self.exp_avg[ui]), spec.views(self.exp_avg_sq[ui])):
                    a.copy_(optim[f"{k}.exp_avg"].reshape(a.shape))
                    b.copy_(optim[f"{k}.exp_avg_sq"].reshape(b.shape))
        if optim is not None:
            self.step = int(optim["step"])
            if "streaming.last_clipped" in optim:
                self.last_clipped = bool(int(optim["streaming.last_clipped"]))

    def close(self) -> None:
        self.sync()
        self.pool.shutdown(wait=True)
