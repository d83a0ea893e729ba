"""SFT: only targets with loss_mask 1 contribute to the loss and the gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from plasma_pipeline.train.config import model_config
from plasma_pipeline.train.data import Batch
from plasma_pipeline.train.model import build_model


def grads(model, batch):
    model.zero_grad()
    loss = model.loss(batch.inputs, batch.targets, batch.mask, batch.n_targets)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def make_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 512, (3, 17), generator=g)
    mask = torch.zeros(3, 16)
    mask[:, 4:10] = 1  # answer tokens; 10.. is padding
    return Batch(ids[:, :-1].clone(), ids[:, 1:].clone(), mask)


def test_padding_tokens_do_not_change_loss_or_gradients():
    model = build_model(model_config("toy"), seed=0)
    b = make_batch()
    loss_a, ga = grads(model, b)
    # change every target the mask excludes after the answer, and the inputs that only feed those targets
    b2 = Batch(b.inputs.clone(), b.targets.clone(), b.mask)
    b2.targets[:, 10:] = (b2.targets[:, 10:] + 7) % 512
    b2.inputs[:, 11:] = (b2.inputs[:, 11:] + 5) % 512
    loss_b, gb = grads(model, b2)
    assert torch.equal(loss_a, loss_b)
    for k in ga:
        torch.testing.assert_close(ga[k], gb[k], atol=0, rtol=0, msg=k)


def test_masked_loss_is_mean_over_trained_targets():
    model = build_model(model_config("toy"), seed=0)
    b = make_batch(1)
    with torch.no_grad():
        logits = model(b.inputs)
        ce = F.cross_entropy(logits.reshape(-1, 512), b.targets.reshape(-1), reduction="none").view(3, 16)
        expected = (ce * b.mask).sum() / b.mask.sum()
        got = model.loss(b.inputs, b.targets, b.mask, b.n_targets)
    torch.testing.assert_close(got, expected)


def test_a_trained_target_does_change_gradients():
    """Control: the check above can fail (a target under mask 1 moves the gradients)."""
    model = build_model(model_config("toy"), seed=0)
    b = make_batch()
    _, ga = grads(model, b)
    b.targets[:, 5] = (b.targets[:, 5] + 7) % 512
    _, gb = grads(model, b)
    assert any(not torch.equal(ga[k], gb[k]) for k in ga)
