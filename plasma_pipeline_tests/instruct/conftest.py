import pytest

from plasma_pipeline_tests.instruct.sp_model import train_chat_sp


@pytest.fixture(scope="session")
def sp_path(tmp_path_factory):
    return train_chat_sp(tmp_path_factory.mktemp("sp"))
