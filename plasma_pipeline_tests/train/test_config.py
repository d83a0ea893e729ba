"""TrainConfig / ModelConfig validate in plain Python (no pydantic in the trainer), naming the field."""

import json
import subprocess
import sys

import pytest

from plasma_pipeline.train.config import MODEL_CONFIGS, TrainConfig, model_config


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"steps": "many"}, r"^steps: expected an integer, got 'many'"),
        ({"steps": 0}, r"^steps: must be >= 1, got 0"),
        ({"steps": True}, r"^steps: expected an integer, got True"),
        ({"batch_size": 0}, r"^batch_size: must be >= 1"),
        ({"micro_batch": -1}, r"^micro_batch: must be >= 0"),
        ({"lr": "fast"}, r"^lr: expected a number, got 'fast'"),
        ({"lr": 0}, r"^lr: must be a finite number > 0"),
        ({"lr": float("nan")}, r"^lr: must be a finite number > 0"),
        ({"warmup": -1}, r"^warmup: must be >= 0"),
        ({"keep_last": 0}, r"^keep_last: must be >= 1"),
        ({"min_lr_ratio": 1.5}, r"^min_lr_ratio: must be in \[0, 1\]"),
        ({"beta2": 1.0}, r"^beta2: must be in \[0, 1\)"),
        ({"grad_clip": -1.0}, r"^grad_clip: must be a finite number >= 0"),
        ({"engine": "gpu"}, r"^engine: expected one of resident, streaming, got 'gpu'"),
        ({"dtype": "fp16"}, r"^dtype: expected one of auto, bf16, fp32, bfloat16, float32, got 'fp16'"),
        ({"speculative_adam": "maybe"}, r"^speculative_adam: expected one of auto, always, never"),
        ({"device": "tpu"}, r"^device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
        ({"model": "13b"}, r"^model: unknown model config '13b'"),
        ({"model_overrides": {"dimm": 3}}, r"^model_overrides: 'dimm' is not a ModelConfig field"),
        ({"recompute": "yes"}, r"^recompute: expected true or false"),
        ({"residual_fp32": True, "engine": "streaming"}, r"^residual_fp32: only the resident engine"),
    ],
)
def test_bad_fields_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kw)
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(kw)


def test_values_the_trainer_accepts_still_load():
    for kw in ({"dtype": "bfloat16"}, {"dtype": "float32"}, {"dtype": "bf16"}, {"device": "cuda:1"},
               {"device": "cpu"}, {"lr": 1}, {"warmup": 0}, {"grad_clip": 0}, {"log_every": 0},
               {"engine": "streaming", "speculative_adam": "never"}):
        assert TrainConfig.from_dict(kw)
    cfg = TrainConfig(model="plasma-1.0-235m", model_overrides={"vocab_size": 32000, "max_seq_len": 2048})
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # run.json round trip
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields: \['stepz'\]"):
        TrainConfig.from_dict({"stepz": 3})


def test_model_shape_errors_name_the_field():
    with pytest.raises(ValueError, match=r"^n_heads: bad head layout: dim=64 is not divisible by n_heads=3"):
        model_config("toy", n_heads=3)
    with pytest.raises(ValueError, match=r"^n_kv_heads: bad head layout"):
        model_config("toy", n_kv_heads=3)
    with pytest.raises(ValueError, match=r"^n_heads: head_dim must be even for RoPE"):
        model_config("toy", dim=36, n_heads=4, n_kv_heads=2)
    with pytest.raises(ValueError, match=r"^max_seq_len: must be >= 1"):
        model_config("toy", max_seq_len=0)
    with pytest.raises(ValueError, match=r"^dim: expected an integer, got '64'"):
        model_config("toy", dim="64")
    with pytest.raises(ValueError, match=r"^dimm: not a ModelConfig field"):
        model_config("toy", dimm=3)
    for cfg in MODEL_CONFIGS.values():
        cfg.validate()


def test_trainer_package_does_not_import_pydantic():
    code = ("import sys; import plasma_pipeline.train.config, plasma_pipeline.train.__main__; "
            "assert 'pydantic' not in sys.modules, 'pydantic imported by plasma_pipeline.train'")
    subprocess.run([sys.executable, "-c", code], check=True)
