#!/usr/bin/env bash
# GPU task (issue 12, the token latency at 512 positions), one device call of about 6 minutes:
# decide the attn_fill_split switch (ATT_FILL=2: attn_split's split holds every position its block
# can, 128 at head_dim 64, once a block per head and split is past one wave) alone and with
# attn_group_heads. The switches' kernel builds against float64, every config against the float64
# reference, one token as a graph at positions 96 and 512 with an A/A row and ATT_FILL=1 (filled at
# every position), and the decode table with the switches' rows and latency by position. Writes
# under $OUT (k, check, p96, p512, d); stops at the first failed check.
set -euo pipefail
: "${OUT:?set OUT to the folder for the outputs}"
cd "$(dirname "$0")/.."
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
python3 scripts/gpu_kernels.py --builds switches --out "$OUT/k" | grep -E "ATT_FILL=2.*n=(600|2048|512)|KERNELS"
stamp kernels
mkdir -p "$OUT/check"
python3 -m perfreview check --preset 1b --quiet | tee "$OUT/check/check_1b.txt" | tail -3
stamp check
V="pdl, trigger after wait;pdl, trigger after wait (A/A);pdl, attention split filled past a wave"
V="$V;pdl, split filled past a wave, heads grouped past a wave;pdl, attention split fills the block"
for pos in 96 512; do
    python3 bench/pdl_variants.py --variants "$V" --rounds 7 --position "$pos" --out "$OUT/p$pos" | grep -E "^###|^\| pdl"
    stamp "position $pos"
done
python3 bench/decode.py --out "$OUT/d" | grep -v -E "Deprecation|report\[" | tail -75
stamp decode
