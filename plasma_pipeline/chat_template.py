"""Chat template: render a conversation to SentencePiece ids plus a per-token loss mask.

Format (every marker below is ONE token id, inserted as an id, never produced by encoding text):

    [BOS] <|system|> system text <|end|>            (optional, only when the conversation has a system turn)
          <|user|> user text <|end|>
          <|assistant|> assistant text <|end|>      (user/assistant turns repeat, any number)
          ...
    [EOS]

Ids: pad=0, unk=1, bos=2, eos=3, then CHAT_SPECIAL_TOKENS in order: <|system|>=4, <|user|>=5, <|assistant|>=6,
<|end|>=7 (reserved by the tokenizer stage as user_defined_symbols; `check_special_ids` checks this at load).
Turn text is encoded with the tokenizer on its own (so it gets SentencePiece's usual leading "▁"); no newline
or space is added around markers, the markers already separate turns.

Loss mask: `mask[i] == 1` means token i is trained as a target (the trainer predicts row[1:] from row[:-1] and
uses mask[1:]). Exactly the assistant content tokens and the <|end|> that closes each assistant turn are 1;
BOS, EOS, role markers (including <|assistant|> itself), system and user text and their <|end|> are 0.
Generation: `prompt_ids` ends with an open `<|assistant|>`; the sampler stops on <|end|> (id 7).

Injection guard: SentencePiece matches user_defined_symbols inside raw text, so a user typing "<|end|>" would
become id 7. `encode_text` replaces any special id produced from text with the byte-fallback pieces of its
characters (or the single-character pieces when the model has no byte fallback), so the text round-trips
through `decode` while no text can forge a turn boundary. Control tokens (<s>, </s>, <pad>) are never
matched in text by SentencePiece.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sentencepiece as spm

from plasma_pipeline.schema import CHAT_SPECIAL_TOKENS

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SYSTEM_ID, USER_ID, ASSISTANT_ID, END_ID = 4, 5, 6, 7
ROLE_IDS = {"system": SYSTEM_ID, "user": USER_ID, "assistant": ASSISTANT_ID}
SPECIAL_IDS = frozenset(range(SYSTEM_ID, END_ID + 1))

_SP_CACHE: dict[str, spm.SentencePieceProcessor] = {}


def load_sp(path: str) -> spm.SentencePieceProcessor:
    """Load a SentencePiece model once per process (worker processes each keep their own) and check its ids."""
    sp = _SP_CACHE.get(str(path))
    if sp is None:
        sp = spm.SentencePieceProcessor(model_file=str(path))
        check_special_ids(sp)
        _SP_CACHE[str(path)] = sp
    return sp


def check_special_ids(sp: spm.SentencePieceProcessor) -> None:
    """Raise ValueError unless the model has pad/unk/bos/eos = 0..3 and the chat tokens at 4..7."""
    want = {PAD_ID: sp.pad_id(), UNK_ID: sp.unk_id(), BOS_ID: sp.bos_id(), EOS_ID: sp.eos_id()}
    bad = [f"expected id {k}, model has {v}" for k, v in want.items() if k != v]
    for i, tok in enumerate(CHAT_SPECIAL_TOKENS, start=SYSTEM_ID):
        if sp.id_to_piece(i) != tok:
            bad.append(f"id {i} should be {tok!r}, model has {sp.id_to_piece(i)!r}")
    if bad:
        raise ValueError("tokenizer does not reserve the chat ids: " + "; ".join(bad))


def _literal_ids(sp: spm.SentencePieceProcessor, token_text: str) -> list[int]:
    """Ids spelling `token_text` as ordinary text: byte-fallback pieces, else per-character pieces, else unk."""
    out: list[int] = []
    for ch in token_text:
        pid = sp.piece_to_id(ch)
        if pid != UNK_ID and pid not in SPECIAL_IDS:
            out.append(pid)
            continue
        for b in ch.encode("utf-8"):
            bid = sp.piece_to_id(f"<0x{b:02X}>")
            out.append(bid)  # unk (1) when the model has no byte fallback
    return out


def encode_text(sp: spm.SentencePieceProcessor, text: str) -> list[int]:
    """Encode untrusted turn text; special chat ids that the text would produce are spelled out literally."""
    ids = sp.encode(text)
    if not SPECIAL_IDS.intersection(ids):
        return ids
    out: list[int] = []
    for i in ids:
        if i in SPECIAL_IDS:
            out.extend(_literal_ids(sp, sp.id_to_piece(i)))
        else:
            out.append(i)
    return out


def _check_messages(messages: Sequence[Mapping[str, str]], open_assistant: bool) -> None:
    if not messages:
        raise ValueError("empty conversation")
    roles = [m["role"] for m in messages]
    for k, r in enumerate(roles):
        if r not in ROLE_IDS:
            raise ValueError(f"message {k}: unknown role {r!r}")
        if r == "system" and k != 0:
            raise ValueError(f"message {k}: a system turn may only come first")
    body = roles[1:] if roles[0] == "system" else roles
    for k, r in enumerate(body):
        if r != ("user" if k % 2 == 0 else "assistant"):
            raise ValueError(f"roles must alternate user/assistant after an optional system turn, got {roles}")
    if not body:
        raise ValueError("conversation has no user turn")
    if not open_assistant and body[-1] != "assistant":
        raise ValueError("a training conversation must end with an assistant turn")
    if open_assistant and body[-1] != "user":
        raise ValueError("a generation prompt must end with a user turn")


def _render(messages: Sequence[Mapping[str, str]], sp: spm.SentencePieceProcessor) -> tuple[list[int], list[int]]:
    ids, mask = [BOS_ID], [0]
    for m in messages:
        role = m["role"]
        content = encode_text(sp, m["content"])
        trained = 1 if role == "assistant" else 0
        ids.append(ROLE_IDS[role])
        mask.append(0)
        ids.extend(content)
        mask.extend([trained] * len(content))
        ids.append(END_ID)
        mask.append(trained)
    return ids, mask


def render(messages: Sequence[Mapping[str, str]], sp: spm.SentencePieceProcessor) -> tuple[list[int], list[int]]:
    """Render a complete conversation (ending with an assistant turn) to (ids, mask), BOS first and EOS last."""
    _check_messages(messages, open_assistant=False)
    ids, mask = _render(messages, sp)
    ids.append(EOS_ID)
    mask.append(0)
    return ids, mask


def prompt_ids(messages: Sequence[Mapping[str, str]], sp: spm.SentencePieceProcessor) -> list[int]:
    """Render a conversation ending with a user turn, followed by an open <|assistant|> for generation."""
    _check_messages(messages, open_assistant=True)
    ids, _ = _render(messages, sp)
    ids.append(ASSISTANT_ID)
    return ids
