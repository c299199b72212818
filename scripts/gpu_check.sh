#!/usr/bin/env bash
# Issue 19's GPU check in one call: install what the machine lacks, run the Triton kernel tests
# on CUDA, a parallel sweep on the GPU, then the GPU benchmark into
# docs/evidence/benchmarks/gpu.json (+ gpu.md, its markdown tables). Every step has its time
# limit (at most about 9 minutes in all, inside a 10-minute device call; less where steps end
# early); a step that overruns is reported and the script exits 1.
#
#   scripts/gpu_check.sh wheels   # on a machine with internet: the packages an offline GPU
#                                 # machine lacks, as wheels/sdists into .whl/ (git-ignored)
#   scripts/gpu_check.sh          # on the GPU machine (installs from .whl/ if it is there)
#
# torch: the machine's own where it sees a GPU, else the CUDA 12.8 wheel from download.pytorch.org
# (needs internet). triton comes with CUDA torch. The peers go in with --no-deps (their
# requirements would replace torch). Where $OUT is set (a device runner), the results are
# copied there too.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/spikelight-site}
EVIDENCE=docs/evidence/benchmarks
# spikelight's requirements a CUDA image may lack, and the peers (pinned as in docs/benchmarks.md)
DEPS=(hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 hydra-joblib-launcher==1.2.0)
PEERS=(snntorch==1.0.0 norse==1.1.0 nir==1.0.8 nirtorch==2.6 spikingjelly==0.0.0.0.14)
PIP=("$PYTHON" -m pip --disable-pip-version-check)

if [ "${1:-run}" = wheels ]; then
    mkdir -p "$WHEELS"
    "${PIP[@]}" download --no-deps -d "$WHEELS" "${DEPS[@]}" "${PEERS[@]}"
    echo "gpu_check: $(ls "$WHEELS" | wc -l) files in $WHEELS; carry it to the GPU machine"
    exit 0
fi

step() { echo "== gpu_check: $* ($(date +%T))"; }

step "torch with CUDA"
if ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    "${PIP[@]}" install -q torch --index-url https://download.pytorch.org/whl/cu128
fi
"$PYTHON" -c "import triton" 2>/dev/null || "${PIP[@]}" install -q "triton>=3.2"

step "spikelight, its missing requirements and the peers (--no-deps) into $SITE"
mkdir -p "$SITE"
if [ -d "$WHEELS" ]; then
    "${PIP[@]}" install -q --upgrade --no-index --no-deps --no-build-isolation --target "$SITE" \
        "$WHEELS"/*
else
    "${PIP[@]}" install -q --upgrade --no-deps --target "$SITE" "${DEPS[@]}" "${PEERS[@]}"
fi
"${PIP[@]}" install -q --upgrade --no-index --no-deps --no-build-isolation --target "$SITE" .
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" -c "import cupy" 2>/dev/null && echo "CuPy: SpikingJelly's cupy backend" \
    || echo "CuPy missing: SpikingJelly runs its torch backend"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PYTHON" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__,
    torch.cuda.get_device_name())"

step "Triton kernels on CUDA against the autograd loop (+ mixed precision)"
status=0
timeout 120 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_fused_triton.py \
    tests/test_mixed_precision.py 2>&1 | tee /tmp/gpu_check_tests.log || status=$?

step "a hydra/launcher=parallel sweep: each job claims a GPU, trains on it, records it"
sweep=/tmp/gpu_check_sweep
rm -rf "$sweep"
timeout 75 "$PYTHON" train.py -m hydra/launcher=parallel hydra.launcher.n_jobs=2 seed=0,1 \
    data.samples_per_class=20 data.num_steps=20 trainer.max_epochs=1 callbacks=none \
    'logger=[]' paths.sweep_dir="$sweep" >/tmp/gpu_check_sweep.log 2>&1 || status=1
"$PYTHON" - "$sweep" <<'EOF' || status=1
"""Each job's metrics.json: finished, on a CUDA device."""
import json
import sys
from pathlib import Path

jobs = sorted(Path(sys.argv[1]).glob("*/metrics.json"))
records = [json.loads(p.read_text()) for p in jobs]
for path, record in zip(jobs, records):
    print(f"{path.parent.name}: status {record['status']}, device {record['device']}")
if len(records) != 2 or any(r["status"] != "ok" or not str(r["device"]).startswith("cuda")
                            for r in records):
    sys.exit("gpu_check: the sweep's jobs did not both train on a GPU")
EOF

step "benchmark on CUDA: SHD-sized and open-neuromorphic cases"
mkdir -p "$EVIDENCE"
ROWS=(--impl reference --impl spikelight --impl "spikelight (PyTorch loops)" --impl snnTorch
      --impl Norse --impl "Norse (compiled)" --impl SpikingJelly)
parts=()
# one run and file per case, each with its time limit (seconds): one that overruns costs only itself
for limit_case in 70:shd_recurrent 50:shd_feedforward 55:on_4k 60:on_8k 80:on_16k; do
    limit=${limit_case%%:*} case=${limit_case#*:} part="/tmp/gpu_check_${limit_case#*:}.json"
    if timeout "$limit" "$PYTHON" scripts/benchmark.py --device cuda --case "$case" "${ROWS[@]}" \
        --repeats 5 --warmup 2 --memory peak --json "$part" >/dev/null; then
        parts+=("$part")
    else
        echo "gpu_check: case $case did not finish" >&2
        status=1
    fi
done
"$PYTHON" - "$EVIDENCE/gpu.json" "${parts[@]}" <<'EOF'
"""One evidence file from the per-case ones: the first's machine and settings, every case."""
import json
import sys
from pathlib import Path

sys.path.insert(0, "scripts")
from bench.report import render  # noqa: E402

target, parts = Path(sys.argv[1]), [json.loads(Path(p).read_text()) for p in sys.argv[2:]]
if not parts:
    sys.exit("gpu_check: no benchmark case finished")
merged = dict(parts[0], cases=[c for p in parts for c in p["cases"]])
merged["targets"] = [t for p in parts for t in p["targets"]]
merged["command"] = "scripts/gpu_check.sh: " + " ; ".join(p["command"] for p in parts)
target.write_text(json.dumps(merged, indent=2) + "\n")
target.with_suffix(".md").write_text(render(merged, True) + "\n")
print(f"gpu_check: wrote {target} and {target.with_suffix('.md')}")
EOF
if [ -n "${OUT:-}" ]; then
    cp "$EVIDENCE/gpu.json" "$EVIDENCE/gpu.md" /tmp/gpu_check_tests.log /tmp/gpu_check_sweep.log \
        "$OUT/"
fi
step "done (status $status)"
exit "$status"
