#!/usr/bin/env bash
# The real run's GPU steps through Dagster on a machine with a GPU and no corpus (the lent H200):
#   python benchmarks/gpu_bundle.py pack --recipe recipes/gpu.yaml  # here: the data stages' output, packed
#   bash benchmarks/gpu_real_run.sh recipes/gpu.yaml OUTDIR          # there, with .whl/ (Dagster etc.) and .gpucarry/
# Installs the carried wheels, unpacks the bundle, then `dagster asset materialize` runs base_model (pretrain),
# chat_model (SFT) and evaluation: the same definitions and assets as `plasma materialize`, on the GPU.
set -euo pipefail
recipe=${1:-recipes/gpu.yaml}
out=${2:-${OUT:-runs/gpu-real-run}}
mkdir -p "$out"
if [ -d .whl ] && [ -z "${NO_CARRIED_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
python3 benchmarks/gpu_bundle.py unpack --recipe "$recipe" --bundle .gpucarry/bundle.tar.gz
export DAGSTER_HOME=${DAGSTER_HOME:-/tmp/dagster_home} PLASMA_RECIPE=$recipe PYTHONUNBUFFERED=1
mkdir -p "$DAGSTER_HOME" && cp dagster.yaml "$DAGSTER_HOME/"
t0=$(date +%s)
python3 -m dagster asset materialize -m plasma_pipeline.definitions --select base_model,chat_model,evaluation \
  2>&1 | grep -v "Warning\|warnings.warn\|BetaWarning\|PreviewWarning" | tee "$out/materialize.log"
echo "materialize wall s: $(( $(date +%s) - t0 ))" | tee -a "$out/materialize.log"
python3 - "$recipe" "$out" <<'PY'
import shutil, sys, tarfile
from pathlib import Path
from plasma_pipeline.defs.common import store_for
from plasma_pipeline.recipe import load_recipe
store, out = store_for(load_recipe(sys.argv[1])), Path(sys.argv[2])
ev = store.current("evaluation").path
for name in ("report.md", "metrics.json"):
    shutil.copy2(ev / name, out / f"evaluation_{name}")
with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:  # the models' run settings and logs, not their weights
    for asset in ("base_model", "chat_model"):
        v = store.current(asset).path
        for name in ("run.json", "metrics.jsonl", "config.json"):
            if (v / name).exists():
                tar.add(v / name, arcname=f"{asset}/{name}")
        (v.parent.parent / "CURRENT").exists() and print(asset, v.name)
PY
