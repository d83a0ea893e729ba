import pytest

from plasma_pipeline_tests.evaluate.fixtures import (
    train_model,
    write_sft_shards,
    write_token_shards,
)
from plasma_pipeline_tests.infer.toy import train_sp


@pytest.fixture(scope="session")
def toy_sp(tmp_path_factory):
    return train_sp(tmp_path_factory.mktemp("sp"))


@pytest.fixture(scope="session")
def pretrain_shards(tmp_path_factory, toy_sp):
    return write_token_shards(tmp_path_factory.mktemp("pretrain_shards"), toy_sp)


@pytest.fixture(scope="session")
def sft_shards(tmp_path_factory, toy_sp):
    return write_sft_shards(tmp_path_factory.mktemp("sft_shards"), toy_sp)


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory, pretrain_shards, toy_sp):
    return train_model(tmp_path_factory.mktemp("base"), pretrain_shards, toy_sp, steps=12)


@pytest.fixture(scope="session")
def chat_dir(tmp_path_factory, sft_shards, toy_sp, base_dir):
    return train_model(tmp_path_factory.mktemp("chat"), sft_shards, toy_sp, steps=8, init_from=base_dir)
