#!/usr/bin/env bash
# GPU task (issue 12, the token latency at 512 positions), one device call of about 6 minutes:
# decide the attn_group_heads switch. Every kernel against float64 (the grouped build at the
# device's slots and always grouped), every config against the float64 reference (the switch
# included), one token as a graph at positions 96 and 512 with an A/A row, and the decode table
# with optimized+attn_group_heads and its latency by position. Writes under $OUT (k, check, p96,
# p512, d); stops at the first failed check.
set -euo pipefail
: "${OUT:?set OUT to the folder for the outputs}"
cd "$(dirname "$0")/.."
python3 scripts/gpu_kernels.py --out "$OUT/k" | grep -E "attn|KERNELS"
mkdir -p "$OUT/check"
python3 -m perfreview check --preset 1b --quiet | tee "$OUT/check/check_1b.txt" | tail -3
V="pdl, trigger after wait;pdl, trigger after wait (A/A);pdl, attention heads grouped past a wave"
V="$V;pdl, attention heads always grouped"
for pos in 96 512; do
    python3 bench/pdl_variants.py --variants "$V" --rounds 7 --position "$pos" --out "$OUT/p$pos" | tail -12
done
python3 bench/decode.py --out "$OUT/d" | tail -60
