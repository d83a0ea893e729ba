"""Text generation with the KV cache: prefill the prompt once, then one token per step.

A model directory is what the trainer's `final/` or a published base_model / chat_model version holds:
`config.json` (ModelConfig fields), `model.safetensors` and, for text in and out, `tokenizer.model`.

Sampling: temperature 0 is greedy (argmax). Otherwise logits / temperature, softmax, then nucleus (top-p)
filtering keeps the smallest set of most likely tokens whose mass reaches top_p (always at least the top one),
renormalises and draws with a seeded torch.Generator on the CPU, so a seed gives the same tokens on any device.

Context: the model was trained on at most `max_seq_len` positions, so prompt + generation are kept inside that
window: `max_new_tokens` is capped to the window and the prompt is cut from the left to fit what remains.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch

from plasma_pipeline.chat_template import BOS_ID, END_ID, EOS_ID, load_sp, prompt_ids
from plasma_pipeline.train.model import KVCache, Transformer, load_model

# Chat models stop at the end of their turn; base models at end of document.
CHAT_STOP_IDS = (END_ID, EOS_ID)
BASE_STOP_IDS = (EOS_ID,)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero every probability outside the nucleus (the smallest top set with mass >= top_p), renormalised.

    probs: (vocab,) summing to 1. The most likely token is always kept."""
    if top_p >= 1.0:
        return probs
    sorted_p, order = torch.sort(probs, descending=True)
    mass_before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass of the strictly more likely tokens
    keep_sorted = mass_before < top_p
    keep_sorted[0] = True
    keep = torch.zeros_like(probs, dtype=torch.bool)
    keep[order[keep_sorted]] = True
    out = torch.where(keep, probs, torch.zeros_like(probs))
    return out / out.sum()


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """One token id from (vocab,) fp32 logits: argmax when temperature == 0, else temperature + top-p sampling."""
    if temperature <= 0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
    probs = top_p_filter(probs, top_p)
    return int(torch.multinomial(probs, 1, generator=generator).item())


class IncrementalDecoder:
    """Turns a growing list of ids into text pieces: decode everything so far, emit the new suffix.

    Decoding the whole list (not piece by piece) gets SentencePiece's spacing and multi-byte characters right;
    text ending in U+FFFD (an incomplete UTF-8 byte sequence from byte-fallback pieces) is held back until the
    character is complete."""

    def __init__(self, sp):
        self.sp = sp
        self.ids: list[int] = []
        self.emitted = ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.sp.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        return self._emit(text)

    def flush(self) -> str:
        return self._emit(self.sp.decode(self.ids)) if self.ids else ""

    def _emit(self, text: str) -> str:
        if text.startswith(self.emitted):
            new = text[len(self.emitted):]
        else:  # decoding changed earlier text (should not happen with SentencePiece); emit what is new
            k = 0
            while k < min(len(text), len(self.emitted)) and text[k] == self.emitted[k]:
                k += 1
            new = text[max(k, len(self.emitted)):] if len(text) > len(self.emitted) else ""
        self.emitted = text
        return new


class Generator:
    """A loaded model (and its tokenizer, if the directory has one) ready to stream tokens."""

    def __init__(self, model_dir: str | Path, device: str | torch.device = "auto", dtype: torch.dtype | None = None,
                 tokenizer_path: str | Path | None = None):
        self.model_dir = Path(model_dir)
        if not (self.model_dir / "model.safetensors").exists():
            raise FileNotFoundError(f"{self.model_dir}: no model.safetensors (not a model directory)")
        self.device = resolve_device(device)
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model: Transformer = load_model(self.model_dir, device=self.device, dtype=dtype).eval()
        self.cfg = self.model.cfg
        tok = Path(tokenizer_path) if tokenizer_path else self.model_dir / "tokenizer.model"
        self.sp = load_sp(str(tok)) if tok.exists() else None

    def _need_sp(self):
        if self.sp is None:
            raise FileNotFoundError(f"{self.model_dir}: no tokenizer.model, so text in/out is unavailable")
        return self.sp

    def fit_window(self, ids: Sequence[int], max_new_tokens: int) -> tuple[list[int], int]:
        """(prompt ids, max_new_tokens) cut so that prompt + generation fit in the model's max_seq_len."""
        window = self.cfg.max_seq_len
        max_new = max(0, min(max_new_tokens, window - 1))
        ids = list(ids)
        if len(ids) + max_new > window:
            ids = ids[-(window - max_new):]
        return ids, max_new

    @torch.inference_mode()
    def stream(self, prompt_ids: Sequence[int], max_new_tokens: int = 128, temperature: float = 0.8,
               top_p: float = 0.95, seed: int | None = None, stop_ids: Sequence[int] = CHAT_STOP_IDS) -> Iterator[int]:
        """Yield generated token ids one at a time; a stop id ends generation and is not yielded."""
        if not prompt_ids:
            raise ValueError("prompt_ids is empty")
        ids, max_new = self.fit_window(prompt_ids, max_new_tokens)
        if max_new == 0:
            return
        gen = None
        if temperature > 0:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(0 if seed is None else seed)
        dtype = self.model.model.embed_tokens.weight.dtype
        cache = KVCache(self.cfg, batch=1, max_len=len(ids) + max_new, device=self.device, dtype=dtype)
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        logits = self.model(x, start_pos=0, kv_cache=cache)[0, -1]
        pos = len(ids)
        stops = set(stop_ids)
        for i in range(max_new):
            tok = sample_next(logits, temperature, top_p, gen)
            if tok in stops:
                return
            yield tok
            if i + 1 == max_new:
                return
            x = torch.tensor([[tok]], dtype=torch.long, device=self.device)
            logits = self.model(x, start_pos=pos, kv_cache=cache)[0, -1]
            pos += 1

    def stream_text(self, prompt_ids: Sequence[int], **kw) -> Iterator[str]:
        """Like `stream`, decoded incrementally into text pieces."""
        dec = IncrementalDecoder(self._need_sp())
        for tok in self.stream(prompt_ids, **kw):
            piece = dec.push(tok)
            if piece:
                yield piece
        tail = dec.flush()
        if tail:
            yield tail

    def chat(self, messages: Sequence[Mapping[str, str]], **kw) -> Iterator[str]:
        """Stream the assistant's reply to a conversation that ends with a user turn."""
        kw.setdefault("stop_ids", CHAT_STOP_IDS)
        return self.stream_text(prompt_ids(messages, self._need_sp()), **kw)

    def complete(self, text: str, **kw) -> Iterator[str]:
        """Stream a base-model continuation of plain text (BOS + text, stops at EOS)."""
        kw.setdefault("stop_ids", BASE_STOP_IDS)
        return self.stream_text([BOS_ID] + self._need_sp().encode(text), **kw)

    def reply(self, messages: Sequence[Mapping[str, str]], **kw) -> str:
        """The whole assistant reply as one string."""
        return "".join(self.chat(messages, **kw))
