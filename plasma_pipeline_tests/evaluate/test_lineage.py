"""Lineage: each model is scored with its own tokenizer on the val data of its own lineage, the bpb check compares
only comparable evaluations, and the report card names the versions each model was trained on.

The scenario of the stale-rerun bug: base_model / chat_model were trained on pretrain_shards / sft_shards of
tokenizer tok-1; then the tokenizer changed and both shard assets were re-tokenized (tok-2) without retraining.
Evaluation must still score the old models on the tok-1 shards (same numbers as before), and a base model
retrained on tok-2 is a new baseline, not a regression."""

import json

import pytest

from plasma_pipeline.evaluate import (
    CHECK_BASE_BPB,
    CHECK_CHAT_BPB,
    EvalConfig,
    LineageError,
    models_from_store,
    run_evaluation,
)
from plasma_pipeline.infer.verify import CorruptModelError
from plasma_pipeline.instruct.eval_prompts import eval_prompts
from plasma_pipeline.shards import ShardStore, StoreConfig
from plasma_pipeline_tests.evaluate.fixtures import (
    publish_model,
    publish_shards,
    train_model,
    write_sft_shards,
    write_token_shards,
)
from plasma_pipeline_tests.infer.toy import make_model_dir, train_sp

STATS = {"dedup": {"kept": 500, "dropped/near_dup": 30}}


def _cfg():
    return EvalConfig(val_max_rows=4, prompts_per_domain=1, max_new_tokens=4, device="cpu")


@pytest.fixture(scope="module")
def prompts():
    return eval_prompts(per_domain=1)[:2]


@pytest.fixture(scope="module")
def lineage(tmp_path_factory, toy_sp, pretrain_shards, sft_shards, base_dir, chat_dir, prompts):
    """A store with the tok-1 lineage published, its first evaluation, then tok-2 shards published on top."""
    root = tmp_path_factory.mktemp("store")
    store = ShardStore(StoreConfig(root=str(root)), root)
    pre1 = publish_shards(store, "pretrain_shards", pretrain_shards, {"tokenizer_version": "tok-1"})
    sft1 = publish_shards(store, "sft_shards", sft_shards, {"tokenizer_version": "tok-1"})
    base = publish_model(store, "base_model", base_dir, {"train_data_version": pre1.id, "tokenizer_version": "tok-1",
                                                         "init_from_version": ""})
    chat = publish_model(store, "chat_model", chat_dir, {"train_data_version": sft1.id, "tokenizer_version": "tok-1",
                                                         "init_from_version": base.id})
    out1 = root / "eval1"
    res1 = run_evaluation(models_from_store(store), prompts, STATS, _cfg(), out1, previous=None)

    # the tokenizer changes and the shard assets are rematerialized; the models are not retrained
    sp2 = train_sp(tmp_path_factory.mktemp("sp2"), vocab_size=520, n_docs=500)
    pre2_dir = write_token_shards(tmp_path_factory.mktemp("pre2"), sp2)
    pre2 = publish_shards(store, "pretrain_shards", pre2_dir, {"tokenizer_version": "tok-2"})
    sft2 = publish_shards(store, "sft_shards", write_sft_shards(tmp_path_factory.mktemp("sft2"), sp2),
                          {"tokenizer_version": "tok-2"})
    assert store.current("pretrain_shards").id == pre2.id != pre1.id
    return {"store": store, "pre1": pre1, "sft1": sft1, "pre2": pre2, "sft2": sft2, "pre2_dir": pre2_dir,
            "sp2": sp2, "base": base, "chat": chat, "out1": out1, "res1": res1,
            "doc1": json.loads((out1 / "metrics.json").read_text())}


def test_stale_rerun_scores_old_models_on_their_own_val_data(lineage, prompts, tmp_path):
    L = lineage
    models = models_from_store(L["store"])
    # the current shards are tok-2, but each model gets the versions of its own lineage
    assert models["base"]["val"] == {"pretrain": L["pre1"].path}
    assert models["chat"]["val"] == {"pretrain": L["pre1"].path, "sft": L["sft1"].path}
    res = run_evaluation(models, prompts, STATS, _cfg(), tmp_path / "eval2", previous=L["doc1"])
    doc = json.loads((tmp_path / "eval2" / "metrics.json").read_text())
    assert doc["metrics"] == L["doc1"]["metrics"]  # the very same numbers as the earlier evaluation
    assert doc["lineage"]["base"]["val_data"]["pretrain_val"]["version"] == L["pre1"].id
    assert doc["lineage"]["chat"]["val_data"]["sft_val"]["version"] == L["sft1"].id
    for name in (CHECK_BASE_BPB, CHECK_CHAT_BPB):
        c = res["checks"][name]
        assert c["passed"] and c["metadata"]["baseline"] == "previous" and c["metadata"]["same_model"]
        assert "nothing to regress" in c["description"]
    assert doc["checks"][CHECK_BASE_BPB] == {"passed": True, "description": res["checks"][CHECK_BASE_BPB]["description"],
                                             "baseline": "previous"}


def test_val_data_of_another_tokenizer_is_refused(lineage, prompts, tmp_path):
    L = lineage
    models = {"base": {"dir": L["base"].path, "val": {"pretrain": L["pre2"].path}}}
    with pytest.raises(LineageError, match=r"tokenizer version tok-1.*tokenizer version tok-2") as e:
        run_evaluation(models, prompts, STATS, _cfg(), tmp_path / "bad")
    assert L["pre1"].id in str(e.value)  # names the version of its own lineage
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_retrained_on_new_tokenizer_is_a_new_baseline_not_a_regression(lineage, prompts, tmp_path):
    L = lineage
    store = L["store"]
    base2_dir = train_model(tmp_path / "base2", L["pre2_dir"], L["sp2"], steps=4)
    base2 = publish_model(store, "base_model", base2_dir, {"train_data_version": L["pre2"].id,
                                                           "tokenizer_version": "tok-2", "init_from_version": ""})
    models = models_from_store(store)  # the chat model still descends from the tok-1 base
    assert models["base"]["val"] == {"pretrain": L["pre2"].path}
    assert models["chat"]["val"] == {"pretrain": L["pre1"].path, "sft": L["sft1"].path}
    res = run_evaluation(models, prompts, STATS, _cfg(), tmp_path / "eval3", previous=L["doc1"])
    base = res["checks"][CHECK_BASE_BPB]
    assert base["passed"] and base["metadata"]["baseline"] == "new"
    assert "no comparable baseline: tokenizer changed (prev tok-1, now tok-2)" in base["description"]
    assert "pretrain_val data changed" in base["description"] and base["metadata"]["domains"] == {}
    assert res["checks"][CHECK_CHAT_BPB]["metadata"]["same_model"]
    doc = json.loads((tmp_path / "eval3" / "metrics.json").read_text())
    assert doc["checks"][CHECK_BASE_BPB]["baseline"] == "new"
    assert doc["lineage"]["base"]["model_version"] == base2.id
    md = (tmp_path / "eval3" / "report.md").read_text()
    assert "| base_bpb_no_regression | PASS (new baseline) |" in md


def test_previous_without_lineage_is_not_comparable(lineage, prompts, tmp_path):
    L = lineage
    old = {k: v for k, v in L["doc1"].items() if k != "lineage"}  # the older metrics.json format
    for label in ("base", "chat"):  # even much better old numbers are no baseline
        for split in old["metrics"][label].values():
            split["overall"]["bits_per_byte"] /= 2
    res = run_evaluation(models_from_store(L["store"]), prompts, STATS, _cfg(), tmp_path / "e", previous=old)
    for name in (CHECK_BASE_BPB, CHECK_CHAT_BPB):
        c = res["checks"][name]
        assert c["passed"] and c["metadata"]["baseline"] == "new"
        assert "no comparable baseline: the previous evaluation recorded no lineage" in c["description"]


def test_same_lineage_real_regression_fails(lineage, prompts, toy_sp, tmp_path):
    L = lineage
    # another base_model version, same tokenizer and same training data, but an untrained (random) model
    worse_dir = make_model_dir(tmp_path / "worse", toy_sp, seed=3)
    worse = publish_model(L["store"], "base_model", worse_dir, {"train_data_version": L["pre1"].id,
                                                                "tokenizer_version": "tok-1", "init_from_version": ""})
    models = {"base": {"dir": worse.path, "val": {"pretrain": L["pre1"].path}}}
    res = run_evaluation(models, prompts, STATS, _cfg(), tmp_path / "e", previous=L["doc1"])
    c = res["checks"][CHECK_BASE_BPB]
    assert not c["passed"] and c["metadata"]["baseline"] == "previous" and not c["metadata"]["same_model"]
    assert "pretrain_val/all" in c["metadata"]["regressed"]
    assert c["metadata"]["domains"]["pretrain_val/all"]["relative_change"] > 0.05
    assert CHECK_CHAT_BPB not in res["checks"]  # no chat model in this evaluation
    assert "| base_bpb_no_regression | FAIL |" in (tmp_path / "e" / "report.md").read_text()


def test_report_names_the_lineage_versions(lineage):
    L = lineage
    md = (L["out1"] / "report.md").read_text()
    assert md == L["res1"]["metadata"]["report"]
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| base | base_model")
            or line.startswith("| chat | chat_model")}
    base, chat = rows["base"], rows["chat"]
    assert f"base_model `{L['base'].id}`" in base and "`tok-1`" in base
    assert f"| `{L['pre1'].id}` | – |" in base  # train data version, no init_from
    assert f"pretrain_val: pretrain_shards `{L['pre1'].id}` (its train data)" in base
    assert f"chat_model `{L['chat'].id}`" in chat and "`tok-1`" in chat
    assert f"| `{L['sft1'].id}` | `{L['base'].id}` |" in chat  # trained on sft1, fine-tuned from base
    assert f"pretrain_val: pretrain_shards `{L['pre1'].id}`" in chat
    assert f"sft_val: sft_shards `{L['sft1'].id}` (its train data)" in chat
    assert L["pre2"].id not in md  # the newer shards are not mistaken for what the models were trained on
    lin = json.loads((L["out1"] / "metrics.json").read_text())["lineage"]
    assert lin["chat"]["init_from_version"] == L["base"].id and lin["base"]["tokenizer_version"] == "tok-1"


def test_evaluation_verifies_model_files(lineage, prompts, tmp_path):
    import shutil

    L = lineage
    copy = tmp_path / "base_model" / "versions" / L["base"].id
    shutil.copytree(L["base"].path, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    models = {"base": {"dir": copy, "val": {"pretrain": L["pre1"].path}}}
    with pytest.raises(CorruptModelError, match=rf"base_model version {L['base'].id}: model.safetensors does not "
                                                r"match its manifest hash"):
        run_evaluation(models, prompts, STATS, _cfg(), tmp_path / "e")


def test_models_from_store_says_what_is_missing(lineage, tmp_path):
    L = lineage
    store = ShardStore(StoreConfig(root=str(tmp_path)), tmp_path)
    publish_model(store, "base_model", L["base"].path, {"train_data_version": L["pre1"].id,
                                                        "tokenizer_version": "tok-1", "init_from_version": ""})
    publish_model(store, "chat_model", L["chat"].path, {"tokenizer_version": "tok-1"})
    with pytest.raises(FileNotFoundError, match="chat_model version .* records no init_from_version"):
        models_from_store(store)
    publish_model(store, "chat_model", L["base"].path, {"train_data_version": L["sft1"].id,  # another folder
                                                        "tokenizer_version": "tok-1", "init_from_version": "gone"})
    with pytest.raises(FileNotFoundError, match="base_model version gone is no longer in the store"):
        models_from_store(store)
