"""Reads verify: `plasma chat | generate | export` and export_hf refuse a model version folder whose files do not
match its manifest, naming the file; an intact version and a plain folder (no manifest) work."""

import json
import shutil
import subprocess
import sys

import pytest

from plasma_pipeline.infer.export_hf import export_hf
from plasma_pipeline.infer.verify import CorruptModelError, verify_model_dir, verify_split
from plasma_pipeline.recipe import REPO_ROOT
from plasma_pipeline.serve_cli import main
from plasma_pipeline.shards import CorruptShardError, ShardStore, StoreConfig

GEN = ["--temperature", "0", "--max-new-tokens", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def published(tmp_path_factory, toy_model_dir):
    """toy_model_dir published as a base_model version (a folder with manifest.json)."""
    root = tmp_path_factory.mktemp("store")
    store = ShardStore(StoreConfig(root=str(root)), root)
    with store.writer("base_model") as w:
        for f in toy_model_dir.iterdir():
            shutil.copy2(f, w.dir / f.name)
        w.metadata["tokenizer_version"] = "tok-1"
        return w.publish()


@pytest.fixture
def corrupt(published, tmp_path):
    """A copy of the published version with one byte of the weights flipped (the tensor data, not the header, so
    the file would still load)."""
    d = tmp_path / "base_model" / "versions" / published.id
    shutil.copytree(published.path, d)
    data = bytearray((d / "model.safetensors").read_bytes())
    data[-3] ^= 0x01
    (d / "model.safetensors").write_bytes(bytes(data))
    return d


def _says_corrupt(text: str, version_id: str) -> None:
    assert f"base_model version {version_id}: model.safetensors does not match its manifest hash" in text
    assert "rematerialize base_model" in text


def test_intact_version_and_plain_folder_verify(published, toy_model_dir, capsys):
    assert verify_model_dir(published.path)["version"] == published.id
    assert verify_model_dir(toy_model_dir) is None  # no manifest: nothing to check against
    assert main(["generate", "The river", "--base", "--model", str(published.path), *GEN]) == 0
    assert capsys.readouterr().out.startswith("The river")


def test_generate_refuses_a_corrupt_version(corrupt, published):
    with pytest.raises(SystemExit) as e:
        main(["generate", "The river", "--base", "--model", str(corrupt), *GEN])
    assert str(e.value).startswith("error: ")
    _says_corrupt(str(e.value), published.id)
    with pytest.raises(CorruptModelError) as e:
        verify_model_dir(corrupt)
    assert isinstance(e.value, CorruptShardError)


def test_chat_refuses_a_corrupt_version(corrupt, published):
    proc = subprocess.run(
        [sys.executable, "-m", "plasma_pipeline.serve_cli", "chat", "--model", str(corrupt), *GEN],
        input="Hello\n/quit\n", capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, check=False,
    )
    assert proc.returncode == 1 and "assistant>" not in proc.stdout
    _says_corrupt(proc.stderr, published.id)
    assert "Traceback" not in proc.stderr


def test_export_refuses_a_corrupt_version(corrupt, published, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["export", "--hf", str(tmp_path / "hf"), "--model", str(corrupt)])
    _says_corrupt(str(e.value), published.id)
    assert not (tmp_path / "hf").exists()
    with pytest.raises(CorruptModelError, match="model.safetensors does not match its manifest hash"):
        export_hf(corrupt, tmp_path / "hf2")  # the library call verifies too
    assert main(["export", "--hf", str(tmp_path / "ok"), "--model", str(published.path)]) == 0
    assert json.loads((tmp_path / "ok" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]


def test_missing_or_unlisted_files_are_refused(published, tmp_path):
    d = tmp_path / "v"
    shutil.copytree(published.path, d)
    (d / "tokenizer.model").unlink()
    with pytest.raises(CorruptModelError, match="tokenizer.model is missing"):
        verify_model_dir(d)
    shutil.copy2(published.path / "tokenizer.model", d / "tokenizer.model")
    mf = json.loads((d / "manifest.json").read_text())
    mf["files"] = [f for f in mf["files"] if f["path"] != "config.json"]
    (d / "manifest.json").write_text(json.dumps(mf))
    with pytest.raises(CorruptModelError, match="config.json is not covered by its manifest"):
        verify_model_dir(d)


def test_default_model_is_verified(tiny_recipe, published, monkeypatch):
    from plasma_pipeline.defs.common import store_for
    from plasma_pipeline.recipe import load_recipe
    from plasma_pipeline.serve_cli import resolve_model

    monkeypatch.setenv("PLASMA_RECIPE", str(tiny_recipe))
    store = store_for(load_recipe(check_paths=False))
    with store.writer("base_model") as w:
        for f in published.path.iterdir():
            if f.name != "manifest.json":
                shutil.copy2(f, w.dir / f.name)
        version = w.publish()
    assert resolve_model(None, "base_model") == version.path
    weights = version.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(SystemExit) as e:
        resolve_model(None, "base_model")
    assert f"base_model version {version.id}: model.safetensors does not match" in str(e.value)


def test_verify_split(tmp_path):
    import pyarrow as pa

    root = tmp_path / "store"
    store = ShardStore(StoreConfig(root=str(root)), root)
    with store.writer("pretrain_shards") as w:
        w.write(pa.table({"input_ids": [[1, 2, 3]], "domain": ["wiki"]}), "train")
        w.write(pa.table({"input_ids": [[4, 5, 6]], "domain": ["wiki"]}), "val")
        v = w.publish()
    assert verify_split(v.path, "val")["version"] == v.id
    (v.path / "train" / "part-00000.parquet").write_bytes(b"junk")  # only the split read is hashed
    assert verify_split(v.path, "val") is not None
    (v.path / "val" / "part-00000.parquet").write_bytes(b"junk")
    with pytest.raises(CorruptModelError, match=rf"pretrain_shards version {v.id}: val/part-00000.parquet does not"):
        verify_split(v.path, "val")
