"""Host AdamW matches torch.optim.AdamW; its undo inverts it; the LR schedule's shape."""

from __future__ import annotations

import pytest
import torch

from plasma_pipeline.train.optim import (adamw_flat_, adamw_flat_compiled_, adamw_undo_flat_,
                                         compiled_adamw_available, lr_at)

HP = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)


def torch_reference(p0, grads, n_decay):
    a = torch.nn.Parameter(p0[:n_decay].clone())
    b = torch.nn.Parameter(p0[n_decay:].clone())
    opt = torch.optim.AdamW([{"params": [a], "weight_decay": HP["weight_decay"]}, {"params": [b], "weight_decay": 0.0}],
                            lr=HP["lr"], betas=(HP["beta1"], HP["beta2"]), eps=HP["eps"], foreach=True)
    for g in grads:
        a.grad, b.grad = g[:n_decay].clone(), g[n_decay:].clone()
        opt.step()
    return torch.cat([a.detach(), b.detach()])


def test_flat_adamw_matches_torch():
    torch.manual_seed(0)
    n, n_decay = 5000, 3000
    p0 = torch.randn(n)
    grads = [torch.randn(n) for _ in range(5)]
    p, m, v = p0.clone(), torch.zeros(n), torch.zeros(n)
    for step, g in enumerate(grads, 1):
        adamw_flat_(p, g, m, v, step=step, n_decay=n_decay, chunk=777, **HP)
    torch.testing.assert_close(p, torch_reference(p0, grads, n_decay), atol=1e-6, rtol=1e-6)


def test_undo_inverts_a_step_and_clipped_redo_matches():
    torch.manual_seed(1)
    n = 4096
    p, m, v = torch.randn(n), torch.randn(n).abs() * 1e-2, torch.rand(n) * 1e-3
    g = torch.randn(n).bfloat16()
    start = [t.clone() for t in (p, m, v)]
    adamw_flat_(p, g, m, v, step=3, n_decay=2048, **HP)
    assert not torch.allclose(p, start[0])
    adamw_undo_flat_(p, g, m, v, step=3, n_decay=2048, **HP)
    for got, want in zip((p, m, v), start):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_lr_schedule():
    assert lr_at(1, 1.0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_at(10, 1.0, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_at(100, 1.0, 10, 100, 0.1) == pytest.approx(0.1)
    mids = [lr_at(s, 1.0, 10, 100, 0.1) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(mids, mids[1:]))


@pytest.mark.slow
def test_compiled_kernel_matches_eager():
    if not compiled_adamw_available():
        pytest.skip("no C++ compiler for inductor here")
    torch.manual_seed(2)
    n = 10_000
    p, m, v = torch.randn(n), torch.zeros(n), torch.zeros(n)
    p2, m2, v2 = p.clone(), m.clone(), v.clone()
    w, w2 = torch.empty(n, dtype=torch.bfloat16), torch.empty(n, dtype=torch.bfloat16)
    for step in (1, 2, 3):
        g = torch.randn(n).bfloat16()
        adamw_flat_(p, g, m, v, step=step, n_decay=6000, grad_scale=0.5, work_out=w, **HP)
        adamw_flat_compiled_(p2, g, m2, v2, w2, step=step, n_decay=6000, grad_scale=0.5, **HP)
    torch.testing.assert_close(p, p2, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(w.float(), w2.float(), atol=1e-2, rtol=1e-2)


@pytest.mark.slow
def test_compiled_kernel_runs_on_every_thread_the_engine_asks_for():
    """The host AdamW kernel must get an OpenMP parallel region for the thread count it is compiled under. Warmed up
    on a small slice, inductor compiled it serial on 16 threads (one core for the whole model on the H200 box),
    while 2 threads, as on this CI machine, still parallelised: so compile under 16 here, whatever the cores."""
    from torch._inductor.utils import run_and_get_cpp_code

    from plasma_pipeline.train import optim

    if not compiled_adamw_available(work_out=False):
        pytest.skip("no C++ compiler for inductor here")
    threads = torch.get_num_threads()
    torch.set_num_threads(16)
    try:
        torch._dynamo.reset()
        _, code = run_and_get_cpp_code(optim.compile_kernel, optim._fused_adamw_kernel_master)
    finally:
        torch.set_num_threads(threads)
        torch._dynamo.reset()
    assert "#pragma omp parallel num_threads(16)" in code
