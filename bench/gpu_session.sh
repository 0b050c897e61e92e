#!/bin/bash
# Issue 32's GPU measurements in one call of a lent device machine (about 8 minutes on one H100):
#   bash bench/gpu_session.sh            (carry .data, holding Debian's fashion-mnist folder; see bench/README.md)
# Each part has its own time limit, and one failing does not stop the next. Eight files are written under
# $OUT (default /tmp/gpu_session), as many as a device call returns: copy bnn_cuda.*, stacked_cuda.md, and
# stacked/equivalence_paper.* as equivalence_paper_cuda.*, into bench/results/; single/ holds the same table's
# seed 0 trained one by one, to set beside the stacked seed 0.
OUT=${OUT:-/tmp/gpu_session}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 QATCORE_PROGRESS=0
exec > >(tee "$OUT/log.txt") 2>&1
DATA=${DATA:-.data/fashion-mnist}
part() {  # part SECONDS NAME COMMAND...: one measurement, timed, within its limit
    local limit=$1 name=$2 start=$SECONDS
    shift 2
    timeout "$limit" "$@"
    local code=$?
    echo "$name: exit $code, $((SECONDS - start)) s"
    return $code
}
date -u
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
part 120 bnn_cuda python3 bench/bench_bnn_cuda.py && cp bench/results/bnn_cuda.* "$OUT/"
part 60 stacked python3 bench/bench_stacked.py --device cuda --output "$OUT/stacked_cuda.md"
part 200 "table, stacked" python3 bench/equivalence_paper.py --data-dir "$DATA" --device cuda --seeds 3 \
    --stack-size 32 --out "$OUT/stacked"
part 240 "table, one by one" python3 bench/equivalence_paper.py --data-dir "$DATA" --device cuda --seeds 1 \
    --out "$OUT/single"
date -u
