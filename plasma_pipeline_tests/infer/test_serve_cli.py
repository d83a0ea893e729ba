"""`plasma chat | generate | export` (plasma_pipeline/serve_cli.py)."""

import json
import subprocess
import sys

from plasma_pipeline.infer.generate import Generator
from plasma_pipeline.recipe import REPO_ROOT
from plasma_pipeline.serve_cli import main


def test_chat_repl_with_piped_stdin(toy_model_dir):
    script = "Hello\nWhat is a river?\n/reset\nHello\n/quit\nnever read\n"
    proc = subprocess.run(
        [sys.executable, "-m", "plasma_pipeline.serve_cli", "chat", "--model", str(toy_model_dir),
         "--temperature", "0", "--max-new-tokens", "12", "--device", "cpu"],
        input=script, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    replies = [line[len("assistant> "):] for line in lines if line.startswith("assistant> ")]
    assert len(replies) == 3 and "(history cleared)" in lines
    gen = Generator(toy_model_dir, device="cpu")
    kw = {"max_new_tokens": 12, "temperature": 0}
    first = gen.reply([{"role": "user", "content": "Hello"}], **kw)
    second = gen.reply([{"role": "user", "content": "Hello"}, {"role": "assistant", "content": first},
                        {"role": "user", "content": "What is a river?"}], **kw)
    assert first.strip()
    assert replies == [first, second, first]  # history kept across turns, cleared by /reset


def test_generate_chat_by_default_and_base(toy_model_dir, capsys):
    gen = Generator(toy_model_dir, device="cpu")
    # the README's one-shot prompt is a question: by default the chat model answers it as a user turn
    assert main(["generate", "Hi", "--model", str(toy_model_dir), "--temperature", "0.9", "--seed", "3",
                 "--max-new-tokens", "10", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    want = gen.reply([{"role": "user", "content": "Hi"}], max_new_tokens=10, temperature=0.9, top_p=0.95, seed=3)
    assert out == want + "\n"
    assert main(["generate", "Hi", "--chat", "--model", str(toy_model_dir), "--temperature", "0.9", "--seed", "3",
                 "--max-new-tokens", "10", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == want + "\n"  # --chat still works (it is the default)
    assert main(["generate", "The river", "--base", "--model", str(toy_model_dir), "--temperature", "0",
                 "--max-new-tokens", "10", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out == "The river" + "".join(gen.complete("The river", max_new_tokens=10, temperature=0)) + "\n"


def test_export_command(toy_model_dir, tmp_path, capsys):
    assert main(["export", "--hf", str(tmp_path / "hf"), "--model", str(toy_model_dir)]) == 0
    names = {p.name for p in (tmp_path / "hf").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json",
            "generation_config.json"} <= names
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]


def test_unknown_command_and_bad_model(tmp_path, capsys):
    assert main(["serve"]) == 2
    try:
        main(["generate", "x", "--model", str(tmp_path)])
    except SystemExit as e:
        assert "not a model directory" in str(e)
    else:
        raise AssertionError("a folder without model.safetensors must be rejected")


def test_default_model_is_the_published_version(tiny_recipe, toy_model_dir, monkeypatch):
    from plasma_pipeline.defs.common import store_for
    from plasma_pipeline.recipe import load_recipe
    from plasma_pipeline.serve_cli import resolve_model

    monkeypatch.setenv("PLASMA_RECIPE", str(tiny_recipe))
    store = store_for(load_recipe(check_paths=False))
    with store.writer("chat_model") as w:
        for f in toy_model_dir.iterdir():
            (w.dir / f.name).write_bytes(f.read_bytes())
        version = w.publish()
    assert resolve_model(None, "chat_model") == version.path
    assert (resolve_model(None, "chat_model") / "model.safetensors").exists()
    try:
        resolve_model(None, "base_model")
    except SystemExit as e:
        assert "base_model" in str(e) and "--model" in str(e)
    else:
        raise AssertionError("an unpublished asset must give a clear error")


def test_long_history_drops_oldest_exchanges_keeps_system(toy_model_dir):
    from plasma_pipeline.chat_template import prompt_ids
    from plasma_pipeline.serve_cli import _fit_history

    gen = Generator(toy_model_dir, device="cpu")
    msgs = [{"role": "system", "content": "Be brief."}]
    for k in range(12):
        msgs += [{"role": "user", "content": f"Question {k} about rivers and mountains?"},
                 {"role": "assistant", "content": f"Answer {k}: rivers flow down from the mountains."}]
    msgs.append({"role": "user", "content": "Last question?"})
    fitted = _fit_history(gen, msgs, 32)
    assert fitted[0] == msgs[0] and fitted[-1] == msgs[-1]
    assert fitted[1:] == msgs[len(msgs) - len(fitted) + 1:]  # a suffix of whole exchanges
    assert 1 < len(fitted) < len(msgs)
    assert len(prompt_ids(fitted, gen.sp)) <= gen.cfg.max_seq_len - 32
