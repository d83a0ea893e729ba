"""run_evaluation end to end on two really trained toy models, the report card files, and the regression check
against a previous version."""

import json

import pyarrow.parquet as pq
import pytest

from plasma_pipeline.evaluate import (
    CHECK_BASE_BPB,
    CHECK_CHAT_BPB,
    EvalConfig,
    run_evaluation,
    write_report,
)
from plasma_pipeline.evaluate.report import read_metrics, training_summary
from plasma_pipeline.instruct.eval_prompts import eval_prompts

STATS = {"clean/wiki": {"kept": 380, "dropped/lang": 12, "dropped/gopher_short": 8},
         "dedup": {"kept": 500, "dropped/near_dup": 30, "dropped/exact": 4}}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cfg():
    return EvalConfig(val_max_rows=4, prompts_per_domain=1, max_new_tokens=6, device="cpu")


def _models(base_dir, chat_dir, pretrain_shards, sft_shards):
    """Plain folders (no manifests): lineage by content hash; the base model is scored on the SFT val split too,
    to show what SFT changed."""
    return {"base": {"dir": base_dir, "val": {"pretrain": pretrain_shards, "sft": sft_shards}},
            "chat": {"dir": chat_dir, "val": {"pretrain": pretrain_shards, "sft": sft_shards}}}


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, base_dir, chat_dir, pretrain_shards, sft_shards):
    out = tmp_path_factory.mktemp("evaluation")
    prompts = eval_prompts(per_domain=2)
    res = run_evaluation(_models(base_dir, chat_dir, pretrain_shards, sft_shards), prompts, STATS, _cfg(), out,
                         previous=None)
    return out, res, prompts


def _png_size(path):
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    return img.shape


def test_files_and_generations(evaluation):
    out, _res, prompts = evaluation
    assert {"generations.parquet", "report.md", "loss.png", "drops.png", "metrics.json"} <= {p.name for p in out.iterdir()}
    h, w, _ = _png_size(out / "loss.png")
    assert h > 100 and w > 200
    assert _png_size(out / "drops.png")[0] > 100
    gens = pq.read_table(out / "generations.parquet").to_pylist()
    domains = sorted({p["domain"] for p in prompts})
    assert len(gens) == 2 * len(domains)  # prompts_per_domain=1, base and chat
    assert sorted(g["domain"] for g in gens if g["model"] == "chat") == domains
    first = {p["domain"]: p for p in reversed(prompts)}  # the first prompt of each domain is the one used
    for g in gens:
        assert g["prompt"] == first[g["domain"]]["prompt"] and g["reference"] == first[g["domain"]]["reference"]
        assert 0 < g["new_tokens"] <= 6 or g["generation"] == ""


def test_metrics_and_metadata(evaluation, pretrain_shards):
    out, res, _ = evaluation
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(m) == {"base", "chat"}
    assert set(m["base"]) == {"pretrain_val", "sft_val"}
    assert sorted(m["base"]["pretrain_val"]["domains"]) == ["code", "wiki"]
    for label in ("base", "chat"):
        for split in ("pretrain_val", "sft_val"):
            bpb = m[label][split]["overall"]["bits_per_byte"]
            assert 0.5 < bpb < 12
            assert res["metadata"][f"{label}/{split}/bits_per_byte"] == bpb
    # SFT val counts only masked targets: far fewer than 4 rows x 64
    assert 0 < m["chat"]["sft_val"]["overall"]["tokens"] < 4 * 64
    # SFT lowered the chat model's loss on the SFT val split below the base model's
    assert m["chat"]["sft_val"]["overall"]["loss"] < m["base"]["sft_val"]["overall"]["loss"]
    sample = res["metadata"]["sample_exchange"]
    assert sample["prompt"] == _cfg().sample_prompt and isinstance(sample["reply"], str)
    assert res["checks"][CHECK_BASE_BPB]["passed"] and res["checks"][CHECK_CHAT_BPB]["passed"]


def test_report_card_content(evaluation, base_dir):
    out, res, _ = evaluation
    md = (out / "report.md").read_text()
    assert md == res["metadata"]["report"]
    for heading in ("## What was trained", "## On what", "## Validation", "## Checks", "## Training curves",
                    "## Sample exchange", "## Sample generations"):
        assert heading in md
    assert "![loss curves](loss.png)" in md and "![drop counts](drops.png)" in md
    s = training_summary(base_dir)
    assert s["steps"] == 12 and s["tokens"] == 12 * 8 * 64 and s["params"] > 100_000
    assert f"| base | toy | {s['params'] / 1e3:.2f}K |" in md
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert f"{m['base']['pretrain_val']['domains']['wiki']['bits_per_byte']:.4f}" in md
    assert "| dedup | near_dup | 30 |" in md and "| clean/wiki | lang | 12 |" in md
    assert "| code | 3,120 | 50.0% |" in md  # per-domain train tokens of the pretrain shards


def test_regression_check_against_previous(evaluation, base_dir, chat_dir, pretrain_shards, sft_shards, tmp_path):
    out, _, prompts = evaluation
    prev = json.loads((out / "metrics.json").read_text())
    # the previous evaluation had another, 20 % better base model (same tokenizer, same val data): a regression
    prev["metrics"]["base"]["pretrain_val"]["domains"]["wiki"]["bits_per_byte"] /= 1.2
    prev["lineage"]["base"].update(model_version="older", weights_sha256="0" * 64)
    res = run_evaluation(_models(base_dir, chat_dir, pretrain_shards, sft_shards), prompts[:1], STATS, _cfg(),
                         tmp_path / "again", previous=prev)
    base, chat = res["checks"][CHECK_BASE_BPB], res["checks"][CHECK_CHAT_BPB]
    assert not base["passed"] and base["metadata"]["regressed"] == ["pretrain_val/wiki"]
    assert base["metadata"]["baseline"] == "previous" and not base["metadata"]["same_model"]
    assert chat["passed"] and chat["metadata"]["same_model"]  # the same weights on the same data: identical numbers
    assert "nothing to regress" in chat["description"] and "moved" not in chat["description"]
    assert all(abs(r["relative_change"]) < 1e-9 for r in chat["metadata"]["domains"].values())
    assert "| base_bpb_no_regression | FAIL |" in (tmp_path / "again" / "report.md").read_text()


def test_write_report_without_metrics_or_drops(tmp_path, base_dir):
    (tmp_path / "m").mkdir()
    for f in ("config.json", "model.safetensors"):
        (tmp_path / "m" / f).write_bytes((base_dir / f).read_bytes())
    md = write_report(tmp_path / "r", models={"base": tmp_path / "m"}, metrics={}, stage_stats={})
    assert "| base | toy |" in md
    assert _png_size(tmp_path / "r" / "loss.png")[0] > 50 and _png_size(tmp_path / "r" / "drops.png")[0] > 50
    assert read_metrics(tmp_path / "m") == {"train": [], "val": [], "events": []}
