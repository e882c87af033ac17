#!/usr/bin/env bash
# GPU task (issue 12, the token latency at 512 positions), one device call of about 8 minutes:
# decide the attn_fill_split switch (a split as long as attn_split's block holds: 128 positions at
# head_dim 64) next to attn_group_heads. Every kernel against float64 (the filled build for 1b, 8b
# and tiny, filled + grouped for 1b), every config against the float64 reference, one token as a
# graph at positions 96 and 512 with an A/A row, and the decode table with both switches' rows
# and their latency by position. Writes under $OUT (k, check, p96, p512, d); stops at the
# first failed check.
set -euo pipefail
: "${OUT:?set OUT to the folder for the outputs}"
cd "$(dirname "$0")/.."
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
python3 scripts/gpu_kernels.py --out "$OUT/k" | grep -E "ATT_FILL|KERNELS"
stamp kernels
mkdir -p "$OUT/check"
python3 -m perfreview check --preset 1b --quiet | tee "$OUT/check/check_1b.txt" | tail -4
stamp check
V="pdl, trigger after wait;pdl, trigger after wait (A/A);pdl, attention heads grouped past a wave"
V="$V;pdl, attention split fills the block;pdl, split fills the block, heads grouped past a wave"
V="$V;pdl, no attention prefetch"
for pos in 96 512; do
    python3 bench/pdl_variants.py --variants "$V" --rounds 7 --position "$pos" --out "$OUT/p$pos" | grep -E "^###|^\| pdl"
    stamp "position $pos"
done
python3 bench/decode.py --out "$OUT/d" | grep -v Deprecation | tail -75
stamp decode
