"""Under Dagster Pipes the CLI reports logs, step metrics and one materialization carrying the weights' sha256."""


import json
import sys
from pathlib import Path

import pytest

dg = pytest.importorskip("dagster")

REPO = Path(__file__).resolve().parents[2]


def test_cli_under_pipes_reports_materialization(tmp_path, shards):
    conf = {"model": "toy", "data_dir": str(shards), "out_dir": str(tmp_path / "out"), "steps": 3, "batch_size": 4,
            "engine": "resident", "device": "cpu", "val_batches": 1}
    (tmp_path / "run.json").write_text(json.dumps(conf))
    seen = {}

    @dg.asset
    def base_model(context: dg.AssetExecutionContext, pipes: dg.PipesSubprocessClient):
        inv = pipes.run(command=[sys.executable, "-m", "plasma_pipeline.train", "--config", str(tmp_path / "run.json")],
                        context=context, cwd=str(REPO))
        seen["messages"] = inv.get_custom_messages()
        return inv.get_materialize_result()

    res = dg.materialize([base_model], resources={"pipes": dg.PipesSubprocessClient()})
    assert res.success
    mat = res.asset_materializations_for_node("base_model")[0]
    sha = mat.metadata["weights_sha256"].value
    assert len(sha) == 64 and mat.tags.get("dagster/data_version") == sha
    steps = [m for m in seen["messages"] if isinstance(m, dict) and "loss" in m]
    assert [m["step"] for m in steps] == [1, 2, 3]
