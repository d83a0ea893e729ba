import pickle

import pytest

from plasma_pipeline.collect import (
    CodeSourceConfig,
    HFSourceConfig,
    LiteratureSourceConfig,
    LocalSourceConfig,
    WikiSourceConfig,
    build_source_config,
)


def test_kind_and_corpus_pick_the_dataclass():
    assert isinstance(build_source_config({"kind": "hf", "path": "HuggingFaceFW/fineweb-edu"}), HFSourceConfig)
    assert isinstance(build_source_config({"kind": "local", "paths": ["a/*.jsonl"]}), LocalSourceConfig)
    wiki = build_source_config({"kind": "offline", "corpus": "wiki", "langs": ["en-us", "fr-fr"], "max_docs": 5})
    assert isinstance(wiki, WikiSourceConfig) and wiki.langs == ["en-us", "fr-fr"] and wiki.max_docs == 5
    assert isinstance(build_source_config({"kind": "offline", "corpus": "code"}), CodeSourceConfig)
    assert build_source_config({"kind": "local", "paths": "x.txt"}).paths == ["x.txt"]


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"kind": "ftp"}, "kind"),
        ({}, "kind"),
        ({"kind": "offline"}, "corpus"),
        ({"kind": "offline", "corpus": "news"}, "corpus"),
        ({"kind": "offline", "corpus": "wiki", "langs": ["de-de"]}, "langs"),
        ({"kind": "offline", "corpus": "wiki", "max_files": 3}, "max_files"),  # unknown for wiki
        ({"kind": "offline", "corpus": "literature", "chunk_chars": 0}, "chunk_chars"),
        ({"kind": "offline", "corpus": "dialog", "unit": "turn"}, "unit"),
        ({"kind": "local", "paths": []}, "paths"),
        ({"kind": "local", "paths": ["a.txt"], "format": "xml"}, "format"),
        ({"kind": "local", "paths": ["a.txt"], "on_non_utf8": "ignore"}, "on_non_utf8"),
        ({"kind": "local", "paths": ["a.txt"], "max_docs": 0}, "max_docs"),
        ({"kind": "local", "paths": ["a.txt"], "max_bytes": -1}, "max_bytes"),
        ({"kind": "local", "paths": ["a.txt"], "batch_docs": True}, "batch_docs"),
        ({"kind": "hf"}, "path"),
        ({"kind": "hf", "path": "x", "text_fild": "t"}, "text_fild"),
        ({"kind": "hf", "path": "x", "meta_fields": "lang"}, "meta_fields"),
    ],
)
def test_bad_specs_name_the_field(spec, field):
    with pytest.raises(ValueError) as e:
        build_source_config(spec)
    assert str(e.value).startswith(f"{field}:"), str(e.value)


def test_kind_mismatch_is_rejected_when_built_directly():
    with pytest.raises(ValueError, match="^kind:"):
        LiteratureSourceConfig(kind="local")


def test_configs_pickle_for_worker_processes():
    cfg = build_source_config({"kind": "offline", "corpus": "literature", "chunk_chars": 3000, "max_files": 2})
    assert pickle.loads(pickle.dumps(cfg)) == cfg
