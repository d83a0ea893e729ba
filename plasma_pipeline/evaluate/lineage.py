"""Lineage: which versions a model was trained on, and which val data it is scored on.

A model is only ever scored with its own tokenizer (the tokenizer.model inside its version folder) on val data of
its own lineage: the base model on the pretrain_shards version it was trained on; the chat model on the
sft_shards version it was trained on and on the pretrain_shards version its base (init_from) was trained on.
Scoring an old model on shards re-tokenized by a newer tokenizer gives meaningless numbers (the ids mean other
pieces), so `resolve_lineage` refuses it, and the regression check (checks.bpb_check) only compares evaluations
whose lineage is comparable.

The lineage of one model, as metrics.json records it:

    {"model_asset": "base_model", "model_version": "3f2a…" | None, "weights_sha256": "…",
     "tokenizer_version": "9c1d…" | None, "tokenizer_sha256": "…",
     "train_data_version": "77ab…" | None, "init_from_version": "…" | "" | None,
     "val_data": {"pretrain_val": {"asset": "pretrain_shards", "version": "77ab…" | None, "sha256": "…",
                                   "tokenizer_version": "9c1d…" | None, "is_train_data": True | False | None,
                                   "dir": "/…/pretrain_shards/versions/77ab…"}}}

Versions come from the manifest.json of the model / shard version folders (the training assets record
train_data_version, tokenizer_version and init_from_version in the model manifest's metadata; shard assets record
tokenizer_version), or from the caller's `lineage` dict for plain folders; a value the caller gives that
contradicts the manifest is an error. The sha256 fields are content hashes (of model.safetensors, tokenizer.model
and the val split's files), taken from the manifest where it lists the file, so plain folders without manifests
still have an identity.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from plasma_pipeline.shards import file_sha256

# The asset each model label is published as, and the split of its own training data.
MODEL_ASSETS = {"base": "base_model", "chat": "chat_model"}
TRAIN_SPLIT = {"base": "pretrain", "chat": "sft"}
# The asset whose versions hold each val split.
SPLIT_ASSETS = {"pretrain": "pretrain_shards", "sft": "sft_shards"}
LINEAGE_KEYS = ("model_version", "weights_sha256", "tokenizer_version", "tokenizer_sha256", "train_data_version",
                "init_from_version")


class LineageError(ValueError):
    """Val data that cannot be compared with the model (another tokenizer), or lineage that contradicts itself."""


def _listed_sha(manifest: dict | None, rel: str) -> str | None:
    for e in (manifest or {}).get("files", []) + (manifest or {}).get("shards", []):
        if e.get("path") == rel:
            return e.get("sha256")
    return None


def split_sha256(shards_dir: str | Path, split: str, manifest: dict | None) -> str:
    """One content hash of a split's files: sha256 over sorted "path:sha256" lines (manifest hashes if listed)."""
    d = Path(shards_dir)
    h = hashlib.sha256()
    for p in sorted((d / split).glob("*.parquet")):
        rel = str(p.relative_to(d))
        h.update(f"{rel}:{_listed_sha(manifest, rel) or file_sha256(p)}\n".encode())
    return h.hexdigest()


def manifest_lineage(manifest: dict | None, label: str | None = None) -> dict[str, Any]:
    """tokenizer_version / train_data_version / init_from_version of a version folder's manifest: its metadata
    (what the training and shard assets record), else its inputs ({parent asset: version id})."""
    manifest = manifest or {}
    meta = dict(manifest.get("metadata") or {})
    inputs = manifest.get("inputs") or {}
    if not meta.get("tokenizer_version") and inputs.get("tokenizer"):
        meta["tokenizer_version"] = inputs["tokenizer"]
    split = TRAIN_SPLIT.get(label or "")
    if not meta.get("train_data_version") and split and inputs.get(SPLIT_ASSETS[split]):
        meta["train_data_version"] = inputs[SPLIT_ASSETS[split]]
    if meta.get("init_from_version") is None and label == "chat" and inputs:
        meta["init_from_version"] = inputs.get("base_model", "")
    return meta


def _merge(key: str, found: Any, given: Any, where: str) -> Any:
    """The manifest's value, else the caller's; both given and different is an error."""
    if given is None:
        return found
    if found in (None, "") or given == "":
        return found if found not in (None, "") else given
    if str(given) != str(found):
        raise LineageError(f"{where}: lineage says {key} {given!r}, but its manifest records {found!r}")
    return found


def resolve_lineage(label: str, model_dir: str | Path, model_manifest: dict | None,
                    val: dict[str, tuple[Path, dict | None]], given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The lineage of one model (see the module docstring), checked for consistency.

    model_manifest / the val manifests: the folders' manifest.json (None for plain folders); val: {split: (dir,
    manifest)}; given: the caller's lineage for plain folders — the LINEAGE_KEYS and "val_data": {split: version
    id or {"version", "tokenizer_version"}}. Raises LineageError when val data was tokenized by another tokenizer
    version than the model's, or given values contradict a manifest."""
    d = Path(model_dir)
    given = dict(given or {})
    meta = manifest_lineage(model_manifest, label)
    asset = (model_manifest or {}).get("asset") or MODEL_ASSETS.get(label, label)
    where = f"{label} model ({asset} version {(model_manifest or {}).get('version') or d})"
    tok = d / "tokenizer.model"
    found = {
        "model_version": (model_manifest or {}).get("version"),
        "weights_sha256": _listed_sha(model_manifest, "model.safetensors") or file_sha256(d / "model.safetensors"),
        "tokenizer_version": meta.get("tokenizer_version"),
        "tokenizer_sha256": ((_listed_sha(model_manifest, "tokenizer.model") or file_sha256(tok))
                             if tok.exists() else None),
        "train_data_version": meta.get("train_data_version"),
        "init_from_version": meta.get("init_from_version"),
    }
    out: dict[str, Any] = {"model_asset": asset}
    for k in LINEAGE_KEYS:
        out[k] = _merge(k, found[k], given.get(k), where)
    given_val = given.get("val_data") or {}
    out["val_data"] = {}
    for split, (vdir, vman) in val.items():
        g = given_val.get(split, given_val.get(f"{split}_val"))
        g = g if isinstance(g, dict) else {"version": g}
        vmeta = manifest_lineage(vman)
        vasset = (vman or {}).get("asset") or SPLIT_ASSETS.get(split, f"{split}_shards")
        vwhere = f"{label} model's {split} val data ({vasset} at {vdir})"
        version = _merge("version", (vman or {}).get("version"), g.get("version"), vwhere)
        vtok = _merge("tokenizer_version", vmeta.get("tokenizer_version"), g.get("tokenizer_version"), vwhere)
        if vtok and out["tokenizer_version"] and vtok != out["tokenizer_version"]:
            raise LineageError(
                f"{where} uses tokenizer version {out['tokenizer_version']}, but its {split} val data "
                f"({vasset} version {version or vdir}) was tokenized with tokenizer version {vtok}: the numbers "
                f"would be meaningless. Score it on the {vasset} version of its own lineage"
                + (f" ({out['train_data_version']})" if TRAIN_SPLIT.get(label) == split and out["train_data_version"]
                   else "") + ", or retrain the model on the new data.")
        is_train = None
        if TRAIN_SPLIT.get(label) == split and version and out["train_data_version"]:
            is_train = version == out["train_data_version"]
        out["val_data"][f"{split}_val"] = {
            "asset": vasset, "version": version, "sha256": split_sha256(vdir, "val", vman),
            "tokenizer_version": vtok, "is_train_data": is_train, "dir": str(vdir),
        }
    return out


def short(version: str | None, sha: str | None = None) -> str:
    """A version id for notes and tables: the id, else the first 12 hex digits of the content hash, else '?'."""
    if version:
        return str(version)
    return f"sha256:{sha[:12]}" if sha else "?"


# ----------------------------------------------------------------------------- from a shard store


def models_from_store(store, base_version: str | None = None, chat_version: str | None = None) -> dict[str, dict]:
    """The `models` argument of run_evaluation for base_model / chat_model versions of a ShardStore (default: the
    current ones), each with the val data of its own lineage:

        base: val pretrain = the pretrain_shards version base was trained on (train_data_version)
        chat: val sft      = the sft_shards version chat was trained on,
              val pretrain = the pretrain_shards version its base (init_from_version) was trained on

    Raises FileNotFoundError with what to do when the model records no lineage or a version of its lineage is no
    longer in the store (retention keeps store.keep_versions per asset)."""
    base = store.version("base_model", base_version) if base_version else store.current("base_model")
    chat = store.version("chat_model", chat_version) if chat_version else store.current("chat_model")

    def meta(v, key: str) -> str:
        val = manifest_lineage(v.manifest, "base" if v.asset == "base_model" else "chat").get(key)
        if not val:
            raise FileNotFoundError(f"{v.asset} version {v.id} records no {key} in its manifest; rematerialize "
                                    f"{v.asset} so its lineage is known")
        return val

    def lookup(asset: str, version_id: str, why: str):
        try:
            return store.version(asset, version_id)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{why}, but {asset} version {version_id} is no longer in the store ({e}); its val data cannot be "
                f"scored with the model's own tokenizer. Retrain on the current data, or raise "
                f"store.keep_versions so older versions stay") from e

    base_pre = meta(base, "train_data_version")
    init = meta(chat, "init_from_version")
    if init == base.id:
        chat_base = base
    else:
        chat_base = lookup("base_model", init, f"chat_model version {chat.id} was fine-tuned from base_model {init}")
    chat_pre = meta(chat_base, "train_data_version")
    chat_sft = meta(chat, "train_data_version")
    return {
        "base": {"dir": base.path, "val": {
            "pretrain": lookup("pretrain_shards", base_pre, f"base_model version {base.id} was trained on "
                               f"pretrain_shards {base_pre}").path}},
        "chat": {"dir": chat.path, "val": {
            "pretrain": lookup("pretrain_shards", chat_pre, f"chat_model version {chat.id}'s base ({chat_base.id}) "
                               f"was trained on pretrain_shards {chat_pre}").path,
            "sft": lookup("sft_shards", chat_sft, f"chat_model version {chat.id} was trained on sft_shards "
                          f"{chat_sft}").path}},
    }
