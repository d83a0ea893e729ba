"""fp8 matmuls (torchao float8 training, emulated on CPU): the resident engine trains through them, close to but
not equal to the high-precision run, and a configuration that cannot use them fails before any work."""

from __future__ import annotations

import pytest
import torch

from plasma_pipeline.train.config import TrainConfig
from plasma_pipeline.train.data import Batch
from plasma_pipeline.train.trainer import build_engine

pytest.importorskip("torchao.float8")


def _losses(fp8: bool, steps: int = 25) -> list[float]:
    cfg = TrainConfig(model="toy", engine="resident", device="cpu", batch_size=8, lr=3e-3, warmup=0, fp8=fp8)
    mcfg = cfg.model_config()
    engine = build_engine(cfg, mcfg, torch.device("cpu"), torch.float32)
    gen = torch.Generator().manual_seed(0)
    rows = torch.randint(1, mcfg.vocab_size, (8, 33), generator=gen)  # one batch, memorised: the loss falls fast
    return [engine.train_step(Batch(inputs=rows[:, :-1], targets=rows[:, 1:], mask=None), cfg.lr).loss
            for _ in range(steps)]


def test_fp8_training_follows_the_high_precision_curve_without_being_it():
    hp, f8 = _losses(False), _losses(True)
    assert hp != f8  # the fp8 path really ran: quantised matmuls change the numbers
    assert f8[-1] < 0.8 * f8[0]  # and it learns
    rel = max(abs(a - b) / a for a, b in zip(hp, f8))
    assert rel < 0.05, f"fp8 loss left the fp32 curve by {rel:.3f}"


def test_fp8_is_refused_on_the_streaming_engine_by_name():
    with pytest.raises(ValueError, match=r"^fp8: only the resident engine"):
        TrainConfig(model="toy", engine="streaming", fp8=True)
