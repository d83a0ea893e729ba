"""HF export: transformers loads it as LlamaForCausalLM with our logits (fp32, < 1e-4), and its tokenizer and
chat template produce our ids."""

import json

import pytest
import sentencepiece as spm
import torch

from plasma_pipeline.chat_template import prompt_ids, render
from plasma_pipeline.infer.export_hf import export_hf
from plasma_pipeline.train.model import load_model
from plasma_pipeline_tests.infer.toy import make_model_dir, wiki_extracts


def _hf():
    import transformers  # a missing transformers must fail the test, not skip it

    return transformers


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def exported(request, tmp_path_factory, toy_sp):
    root = tmp_path_factory.mktemp("export")
    model_dir = make_model_dir(root / "model", toy_sp, tie=request.param, seed=7)
    out = export_hf(model_dir, root / "hf")
    return model_dir, out


def test_logits_match_transformers(exported, toy_sp):
    model_dir, out = exported
    tf = _hf()
    hf = tf.LlamaForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ours = load_model(model_dir)
    sp = spm.SentencePieceProcessor(model_file=str(toy_sp))
    texts = wiki_extracts(2, start=4000)
    rows = [[2] + sp.encode(t)[:100] for t in texts]
    n = min(len(r) for r in rows)
    x = torch.tensor([r[:n] for r in rows])
    assert n > 50
    with torch.no_grad():
        a = ours(x)
        b = hf(x).logits.float()
    assert a.shape == b.shape
    assert a.abs().max().item() > 0.5  # real, non-degenerate logits
    assert (a - b).abs().max().item() < 1e-4


def test_config_fields(exported):
    model_dir, out = exported
    ours = json.loads((model_dir / "config.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]) == (ours["dim"], ours["ffn_dim"], ours["n_layers"])
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (ours["n_heads"], ours["n_kv_heads"])
    assert cfg["rope_theta"] == ours["rope_theta"] == 500000.0 and cfg["rms_norm_eps"] == ours["norm_eps"]
    assert cfg["tie_word_embeddings"] == ours["tie_embeddings"]
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [7, 3]


def test_tokenizer_parity_and_chat_template(exported, toy_sp):
    _, out = exported
    tf = _hf()
    tok = tf.AutoTokenizer.from_pretrained(str(out))
    sp = spm.SentencePieceProcessor(model_file=str(toy_sp))
    for text in wiki_extracts(20, start=6000) + ["def f(x):\n    return  x * 2  # two spaces", "Zürich 東京 42"]:
        assert tok.encode(text) == [2] + sp.encode(text), text[:60]
        assert tok.decode(tok.encode(text), skip_special_tokens=True) == text
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is Lyon?"},
            {"role": "assistant", "content": "In France, on the Rhône."}, {"role": "user", "content": "And Basel?"}]
    gen_ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert gen_ids == prompt_ids(msgs, sp)
    full = tok.apply_chat_template(msgs[:3], tokenize=True, return_dict=True)["input_ids"]
    assert full == render(msgs[:3], sp)[0]
