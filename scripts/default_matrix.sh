#!/usr/bin/env bash
# Every neuron x recurrence x time-constant init on the default data (randman, default epochs),
# with the default weight initialisation and no per-option tuning (issue: "every documented
# command learns"). One Hydra multirun, then its summary table:
#   bash scripts/default_matrix.sh [SWEEP_DIR] [extra overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
sweep_dir=${1:-outputs/multiruns/default_matrix}
shift || true
python train.py -m \
    neuron=if,lif,alif,adlif \
    model.network.recurrent=false,true \
    init=homogeneous,heterogeneous \
    logger=[csv] \
    hydra.sweep.dir="$sweep_dir" "$@"
python scripts/summarize_sweep.py "$sweep_dir" --x neuron --y test/acc \
    --group model.network.recurrent
