import pytest

from plasma_pipeline_tests.infer.toy import make_model_dir, train_sp


@pytest.fixture(scope="session")
def toy_sp(tmp_path_factory):
    return train_sp(tmp_path_factory.mktemp("sp"))


@pytest.fixture(scope="session")
def toy_model_dir(tmp_path_factory, toy_sp):
    return make_model_dir(tmp_path_factory.mktemp("model"), toy_sp)
