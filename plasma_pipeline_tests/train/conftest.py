from __future__ import annotations

import pytest
import torch

from plasma_pipeline_tests.train.shards import write_shards


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("pretrain"), seq_len=32, vocab=512)


@pytest.fixture(scope="session")
def sft_shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("sft"), seq_len=32, vocab=512, sft=True)
