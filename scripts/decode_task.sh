#!/usr/bin/env bash
# GPU task (issue 12), one device call of about 8 minutes: the defaults as they stand. Every kernel
# and every kernel-tuning build against float64 with the GEMV bandwidth table, every config against
# the float64 reference, and the decode table (tokens/s against the copy bandwidth and PyTorch,
# latency by position, each kernel beside its floor), and one token at positions 96 and 512 of the
# default's attention against the one-wave alternatives, and the projections alone as one launch each
# against one persistent launch (bench/persistent_chain.py). Writes under $OUT (k, check, p96, p512, c,
# d); stops at the first failed check (the probe excepted). On the lent machine (no network): nvtx and
# cupti-python as wheels, and
#   export PYTHONPATH=/tmp/site:$PWD PERFREVIEW_GIT_COMMIT=<the commit> PYTHONUNBUFFERED=1
set -euo pipefail
: "${OUT:?set OUT to the folder for the outputs}"
cd "$(dirname "$0")/.."
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
python3 scripts/gpu_kernels.py --out "$OUT/k" | grep -E "KERNELS"
stamp kernels
mkdir -p "$OUT/check"
python3 -m perfreview check --preset 1b --quiet | tee "$OUT/check/check_1b.txt" | tail -2
stamp check
V="pdl, trigger after wait;pdl, trigger after wait (A/A);pdl, attention split filled past a wave"
V="$V;pdl, attention split fits one wave"
for pos in 96 512; do  # the default's attention against the alternatives, with an A/A row
    python3 bench/pdl_variants.py --variants "$V" --rounds 7 --position "$pos" --out "$OUT/p$pos" | grep -E "^###|^\| pdl"
    stamp "position $pos"
done
python3 bench/decode.py --out "$OUT/d" | grep -v -E "Deprecation|report\[" | tail -75
stamp decode
# a probe, last: if one of its experimental builds fails, the measurements above are already written
python3 bench/persistent_chain.py --out "$OUT/c" | grep -E "^###|^\| (one|ring)" || echo "persistent chain: FAILED (above)"
stamp "persistent chain"
# The device returns at most 8 files: the tables that need nothing but their JSON stay behind and are
# rendered here (render.render("pdl_variants.md.j2" or "persistent_chain.md.j2", r=<the JSON>)).
rm -f "$OUT"/p96/*.md "$OUT"/p512/*.md "$OUT"/c/*.md
