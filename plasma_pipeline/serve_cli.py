"""`plasma chat | generate | export`: talk to, prompt, or export a trained model.

    plasma chat     [--model DIR] [--system TEXT] [sampling flags]    REPL; /reset clears history, /quit exits
    plasma generate "PROMPT" [--base] [--model DIR] [sampling flags]  one-shot chat reply; --base continues text
    plasma export   --hf OUT [--model DIR | --asset chat_model]       LlamaForCausalLM folder for transformers
    plasma export   --gguf FILE [--model DIR | --asset chat_model]    one GGUF file for llama.cpp / Ollama

Sampling flags: --max-new-tokens N --temperature T (0 = greedy) --top-p P --seed S --device auto|cpu|cuda.
Without --model, the model is the current published version of `chat_model` (chat, generate, export) or
`base_model` (generate --base, export --asset base_model) in the recipe's shard store ($PLASMA_RECIPE or
recipes/default.yaml). Reads verify: a model version folder (one with manifest.json) is re-hashed against its
manifest before it is loaded, and a corrupt file is refused with an error naming it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

USAGE = "usage: plasma {chat,generate,export} [options]   (see `plasma <command> --help`)"


def resolve_model(model: str | None, asset: str, verify: bool = True) -> Path:
    """--model DIR if given, else the current version of `asset` in the recipe's shard store.

    Reads verify: a store version folder (one with manifest.json, which the default always is) has its files
    re-hashed against the manifest first, and a mismatch exits with an error naming the file. A plain directory
    without a manifest (e.g. a trainer's final/) loads as it is."""
    if model:
        path = Path(model)
        if not (path / "model.safetensors").exists():
            raise SystemExit(f"error: {path} is not a model directory (no model.safetensors)")
    else:
        from plasma_pipeline.defs.common import store_for
        from plasma_pipeline.recipe import load_recipe

        try:
            path = Path(store_for(load_recipe(check_paths=False)).current(asset).path)
        except FileNotFoundError as e:
            raise SystemExit(f"error: {e}\n(pass --model DIR, or run `plasma materialize` to train {asset})") from e
    if verify:
        from plasma_pipeline.infer.verify import CorruptModelError, verify_model_dir

        try:
            verify_model_dir(path)
        except CorruptModelError as e:
            raise SystemExit(f"error: {e}") from e
    return path


def _sampling_args(p: argparse.ArgumentParser, max_new: int) -> None:
    p.add_argument("--model", help="model directory (config.json, model.safetensors, tokenizer.model)")
    p.add_argument("--max-new-tokens", type=int, default=max_new, help=f"tokens to generate at most (default {max_new})")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default 0.95)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: random)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")


def _kw(args) -> dict:
    if args.temperature < 0:
        raise SystemExit("error: --temperature must be >= 0")
    if not 0 < args.top_p <= 1:
        raise SystemExit("error: --top-p must be in (0, 1]")
    return {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p}


def _seed(args, turn: int = 0) -> int:
    import random

    return (args.seed + turn) if args.seed is not None else random.randrange(2**31)


def _fit_history(gen, messages: list[dict], max_new: int) -> list[dict]:
    """Drop the oldest user/assistant exchanges (never the system turn) until the prompt leaves room to reply."""
    from plasma_pipeline.chat_template import prompt_ids

    msgs = list(messages)
    head = msgs[:1] if msgs and msgs[0]["role"] == "system" else []
    body = msgs[len(head):]
    budget = gen.cfg.max_seq_len - min(max_new, gen.cfg.max_seq_len // 2)
    while len(body) > 1 and len(prompt_ids(head + body, gen.sp)) > budget:
        body = body[2:]
    return head + body


def cmd_chat(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="plasma chat", description="Chat with the model; /reset clears the history, "
                                "/quit (or end of input) exits. Works with piped stdin.",
                                epilog='example: plasma chat --system "Answer briefly." --temperature 0.7')
    _sampling_args(p, 256)
    p.add_argument("--system", default=None, help="optional system message")
    args = p.parse_args(argv)
    kw = _kw(args)
    from plasma_pipeline.infer.generate import Generator

    gen = Generator(resolve_model(args.model, "chat_model"), device=args.device)
    interactive = sys.stdin.isatty()
    system = [{"role": "system", "content": args.system}] if args.system else []
    out = sys.stdout
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input at a terminal)
        except ImportError:
            pass
        out.write(f"plasma chat — {gen.model_dir} ({gen.cfg.num_params() / 1e6:.1f}M params). /reset, /quit\n")
    try:
        _repl(gen, args, kw, system, interactive, out)
    except KeyboardInterrupt:
        out.write("\n")
    return 0


def _repl(gen, args, kw: dict, system: list[dict], interactive: bool, out) -> None:
    history: list[dict] = list(system)
    turn = 0
    while True:
        if interactive:
            try:
                text = input("you> ")
            except EOFError:
                break
        else:
            line = sys.stdin.readline()
            if not line:
                break
            text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.strip() == "/quit":
            break
        if text.strip() == "/reset":
            history = list(system)
            out.write("(history cleared)\n")
            out.flush()
            continue
        history.append({"role": "user", "content": text})
        history = _fit_history(gen, history, kw["max_new_tokens"])
        out.write("assistant> ")
        out.flush()
        reply = []
        for piece in gen.chat(history, seed=_seed(args, turn), **kw):
            reply.append(piece)
            out.write(piece)
            out.flush()
        out.write("\n")
        out.flush()
        history.append({"role": "assistant", "content": "".join(reply)})
        turn += 1


def cmd_generate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="plasma generate", description="One-shot generation: the chat model's reply "
                                "to PROMPT as a user turn (chat template), or with --base a base-model continuation of PROMPT.",
                                epilog='example: plasma generate "Tell me about Paris."   |   plasma generate --base "Paris is"')
    p.add_argument("prompt", help="prompt text")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--chat", action="store_true",
                      help="reply to PROMPT as a user turn with the chat model (the default)")
    mode.add_argument("--base", action="store_true",
                      help="continue PROMPT as plain text with the base model (stops at end of document)")
    _sampling_args(p, 128)
    args = p.parse_args(argv)
    kw = _kw(args)
    from plasma_pipeline.infer.generate import Generator

    gen = Generator(resolve_model(args.model, "base_model" if args.base else "chat_model"), device=args.device)
    if args.base:
        sys.stdout.write(args.prompt)
        stream = gen.complete(args.prompt, seed=_seed(args), **kw)
    else:
        stream = gen.chat([{"role": "user", "content": args.prompt}], seed=_seed(args), **kw)
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="plasma export", description="Export a model for transformers' LlamaForCausalLM "
                                "(--hf DIR) or for llama.cpp-based tools such as llama.cpp and Ollama (--gguf FILE).",
                                epilog="examples: plasma export --hf out/hf-model --asset chat_model --dtype bfloat16 | "
                                       "plasma export --gguf out/chat.gguf")
    p.add_argument("--hf", metavar="DIR", help="output folder (LlamaForCausalLM layout)")
    p.add_argument("--gguf", metavar="FILE", help="output GGUF file (llama architecture, tokenizer and chat template)")
    p.add_argument("--model", help="model directory (default: current version of --asset)")
    p.add_argument("--asset", default="chat_model", choices=["chat_model", "base_model"], help="default chat_model")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="saved weight dtype (default float32 for --hf, float16 for --gguf, which has no bfloat16)")
    args = p.parse_args(argv)
    if not args.hf and not args.gguf:
        p.error("give --hf DIR or --gguf FILE (or both)")
    if args.gguf and args.dtype == "bfloat16":
        p.error("--gguf writes float32 or float16 weights, not bfloat16")
    # resolve_model verified the version against its manifest; the exporters need not hash it a second time
    model = resolve_model(args.model, args.asset)
    if args.hf:
        from plasma_pipeline.infer.export_hf import export_hf

        out = export_hf(model, args.hf, dtype=args.dtype or "float32", verify=False)
        print(f"exported to {out}: " + ", ".join(sorted(f.name for f in out.iterdir())))
    if args.gguf:
        from plasma_pipeline.infer.export_gguf import export_gguf

        out = export_gguf(model, args.gguf, dtype=args.dtype or "float16", verify=False)
        print(f"exported to {out} ({out.stat().st_size / 1e6:.1f} MB GGUF; e.g. llama-cli -m {out})")
    return 0


COMMANDS = {"chat": cmd_chat, "generate": cmd_generate, "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
