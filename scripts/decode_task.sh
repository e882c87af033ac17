#!/usr/bin/env bash
# GPU task (issue 12): the defaults as they stand, in stages that each fit one device call. Every kernel
# and every kernel-tuning build against float64 with the GEMV bandwidth table, every config against
# the float64 reference (checks); one token at positions 96 and 512, optimized's build (overlap_tuning)
# with an A/A pair against the build before it and against it without each part of overlap_tuning
# (variants); the decode table: tokens/s against the copy bandwidth and PyTorch, latency by position,
# each kernel beside its floor (decode); the projections alone as one launch each against one
# persistent launch, bench/persistent_chain.py (chain); the whole token as one persistent launch against one launch a kernel, bench/persistent_token.py (token).
#   scripts/decode_task.sh [STAGE...]     STAGE: checks, variants, decode, chain, token; none: all five
#   scripts/decode_task.sh coresidency    one token at 96 and 512 for the builds whose blocks share SMs with the
#                                         next kernel's (pdl_variants rows; pick a candidate from it)
#   CANDIDATE=<switch> [CANDIDATE_ROW=<pdl_variants row>] [AB_AT="32:128 448:64"] [AB_BUDGET=110] [AB_PRESETS="1b 8b"] scripts/decode_task.sh candidate
#   DECODE_CONFIGS=<rows of bench/decode.py's OURS, comma-separated> [DECODE_PRESETS=1b] [DECODE_ISOLATE=1] scripts/decode_task.sh decode
#                                         (a subset; DECODE_ISOLATE: each row in a process of its own)
#   scripts/decode_task.sh growth         the CUPTI tables alone (bench/decode.py --traced-only): where the
#                                         growth from position 32 to 512 goes, kernel by kernel (about a minute)
#   CANDIDATE=attn_merge_ahead CANDIDATE_ROW="optimized, merge loads 16 ahead" AB_AT="32:128 448:64 512:128" \
#       scripts/decode_task.sh candidate   the merge's 16 loads ahead (the growth to 512 is the merge's), then
#       DECODE_CONFIGS=optimized+attn_merge_ahead scripts/decode_task.sh decode   its latency by position
#   scripts/decode_task.sh marks          what the run-ahead loop's CUDA events between token launches cost
#                                         (bench/token_marks.py, about a minute)
#   scripts/decode_task.sh gap            one token at 96 on the pipeline's memory and on pdl_variants' (weights,
#                                         caches, small buffers' places; bench/token_gap.py): no row apart (cc618b3)
#   scripts/decode_task.sh footprint      the same 1b token (and tg128) in one process holding nothing else, a
#                                         session, an extra 40 GB, each freed again (bench/footprint.py, ~1 min):
#                                         every row stepped 1.5% slower a few seconds in (7437051)
#   scripts/decode_task.sh drift          the 1b token and a device copy round after round for 30 s, 8 s idle, 10 s
#                                         more, with NVML's clocks, power and clock event reasons (bench/drift.py)
#   scripts/decode_task.sh steps          the same rounds after each of what footprint's process does in turn (a
#                                         session, its pipeline, 16 tokens, 3 x 128, free, cuBLAS, torch), in two orders
#   scripts/decode_task.sh bisect         the same after 24 x 16 tokens, then 32, 64, 96, 128 tokens in turn; in a second
#                                         process after a 160-token prompt, then 128 tokens
#   scripts/decode_task.sh cause          the same after tokens whose events go back to the recorder each run; after
#                                         512, 1024, 2048 CUDA events alone; after 1024 launches of the graph alone; after
#                                         1024 of the token at 96 without the advance (footprint's at-96 row). At
#                                         3ea05f0 (drift_cause_*): not the events; either 1024 launches step it
#   scripts/decode_task.sh which          the same after 1024 launches of the bench's token 16 at a time (as the
#                                         pipeline's were), then of a second bench token (weights, caches and stream
#                                         of its own); in a second process after 128, 256, 512 and 1024
#                                         launches in all of the pipeline's graph (how many step it); in a third
#                                         after 1024 of a second bench token with CuPy's position fills each 16;
#                                         in a fourth after 1024 of a second bench token beside a session and its
#                                         pipeline (made, not launched). At b5e2899 (drift_which_*): CuPy's fills
#                                         step it, the rest do not
#   scripts/decode_task.sh carveout       the same after fills of our own without (bn) and with (bk) our kernels'
#                                         carveout preference, and after sm_config_reset's kernel (rc: every SM
#                                         given blocks that prefer it); in a third, the pipeline with sm_config_reset after 24
#                                         runs of 16 tokens, after CuPy's fills, after one run
#   scripts/decode_task.sh foreign        the same after fills by the token's own module (own_reset's kernel) alone
#                                         and as a graph, by a memset, by copies in and out; the pipeline's runs with own_reset, then without;
#                                         a fill of another module with every function loaded at once (EAGER)
#   CANDIDATE=own_reset CANDIDATE_ROW= AB_AT= DECODE_PRESETS=1b DECODE_CONFIGS=optimized+own_reset DECODE_ISOLATE=1 \
#       scripts/decode_task.sh candidate decode foreign   own_reset's kernel against float64 (no pdl_variants row, no
#       perfreview ab: in one process the step reaches both sides), the 1b's table with each row in a process of
#       its own (before the step's cause, so that a call cut short keeps the table), and the step's cause: one
#       call, 5 files back
# candidate: a kernel-tuning switch measured for optimized before it joins it: optimized's build with it
# against float64, its pdl_variants row beside optimized and an A/A row at positions 96 and 512, and
# perfreview ab (optimized against optimized with the switch, A/A control) at tg128 on the 1b and the 8b
# (AB_AT: other PROMPT:TOKENS too, e.g. 448:64 for the positions up to 512, 512:128 past it: at 512 a head's
# attention has 9 splits, the first position whose 288 attn_split blocks pass the 264 an H100 holds at 2 an SM).
# The first four took 509 s at 0f2153d, close to the 600 s a device call may run: run "checks
# variants", "decode" and "chain token" as separate calls (token last: a fault there ends the call).
# Writes under $OUT (k, check, p96, p512, d, c, t, ab.tar); stops at the first failed check (the probes
# excepted). On the lent machine (no network): nvtx and cupti-python as wheels, and
#   export PYTHONPATH=/tmp/site:$PWD PERFREVIEW_GIT_COMMIT=<the commit> PYTHONUNBUFFERED=1
set -euo pipefail
: "${OUT:?set OUT to the folder for the outputs}"
cd "$(dirname "$0")/.."
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(checks variants decode chain token)
for s in "${stages[@]}"; do
    case "$s" in checks|variants|decode|growth|marks|gap|footprint|drift|steps|bisect|cause|which|carveout|foreign|chain|token|candidate|coresidency) ;; *) echo "decode_task: error: unknown stage $s" >&2; exit 2;; esac
done
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
by_action() { awk '/^By action/{f=1} /^\| second/{f=0} f && /^\|/'; }  # drift.md's by-action table alone
one_token() {  # the pdl_variants rows named in $1 (';'-separated), one token at positions 96 and 512, $2 rounds (7)
    for pos in 96 512; do
        python3 bench/pdl_variants.py --variants "$1" --rounds "${2:-7}" --position "$pos" --out "$OUT/p$pos" \
            | grep -E "^###|^\| (pdl|optimized)"
        stamp "position $pos"
    done
}
for s in "${stages[@]}"; do
    case "$s" in
    checks)
        python3 scripts/gpu_kernels.py --out "$OUT/k" | grep -E "KERNELS"
        stamp kernels
        mkdir -p "$OUT/check"
        python3 -m perfreview check --preset 1b --quiet | tee "$OUT/check/check_1b.txt" | tail -2
        stamp check;;
    variants)
        # optimized's build (overlap_tuning) with an A/A pair, against the build before overlap_tuning and
        # against optimized without each of overlap_tuning's parts (the H100 at e0546e4: its gain on the 1b
        # shrinks from 42 µs a token at 96 to 16 at 512)
        V="optimized;pdl, filled past a wave, early and hoisted loads;optimized, merge triggers after its wait"
        V="$V;optimized, norm triggers after its wait;optimized, qkv and gate/up prefetch 4;optimized (A/A)"
        one_token "$V";;
    coresidency)
        # the next kernel's block beside two of the one before it (a7472e0): optimized against the builds whose
        # residual GEMVs (both, or o_proj alone) load 8 a lane and whose attention takes 64 registers
        V="optimized;optimized (A/A);optimized, residual GEMVs 8 a lane;optimized, o_proj 8 a lane"
        V="$V;optimized, attention 4 blocks an SM;optimized, residual GEMVs 8 a lane, attention 4 blocks an SM"
        one_token "$V";;
    candidate)
        : "${CANDIDATE:?set CANDIDATE to a kernel-tuning switch}" "${CANDIDATE_ROW=}"  # no row: no pdl_variants
        python3 scripts/gpu_kernels.py --switch "$CANDIDATE" --out "$OUT/k" | grep -E "KERNELS|FAIL|False"
        stamp "kernels, optimized with $CANDIDATE"
        [ -z "$CANDIDATE_ROW" ] || one_token "optimized;optimized (A/A);$CANDIDATE_ROW" 9
        for at in ${AB_AT-32:128}; do  # PROMPT:TOKENS (unset: 32:128, tg128 after 32, written to ab_<preset>; set empty: none)
            prompt=${at%%:*} tokens=${at##*:} suffix=""
            [ "$prompt" = 32 ] || suffix="_p$prompt"
            for preset in ${AB_PRESETS:-1b 8b}; do  # the review's own verdict, with its interval and the A/A control
                mkdir -p "$OUT/ab_$preset$suffix"
                python3 -m perfreview ab --preset "$preset" --a config=optimized --b "config=optimized,$CANDIDATE=on" \
                    --aa --prompt-tokens "$prompt" --tokens "$tokens" --budget "${AB_BUDGET:-110}" --quiet --no-plots \
                    --out "$OUT/ab_$preset$suffix/review.md" | grep -v -E "Deprecation" | tail -4
                stamp "ab $preset after $prompt"
            done
        done;;
    growth)  # CUPTI alone: where optimized's token time goes, and its growth from 32 to 512 kernel by kernel
        python3 bench/decode.py --traced-only --out "$OUT/g" | grep -v -E "Deprecation" | tail -40
        stamp growth;;
    marks)  # the events around each queued token's launch against none, one, and bare launches
        python3 bench/token_marks.py --out "$OUT/m" | grep -v -E "Deprecation" | tail -20
        stamp marks;;
    gap)  # one token at 96 on the pipeline's memory against pdl_variants' (weights, caches, small buffers)
        python3 bench/token_gap.py --presets 1b,8b --out "$OUT/g" | grep -E "^###|^\| (pipeline|bench)"
        stamp gap;;
    footprint)  # whether what else the process holds on the GPU slows the token (the 1b only: 40 GB more fits)
        python3 bench/footprint.py --presets 1b --out "$OUT/f" | grep -E "^###|^\| [a-z]"
        stamp footprint;;
    drift)  # whether the token and the copy step down together under load, and whether idle undoes it
        python3 bench/drift.py --load-s 30 --idle-s 8 --again-s 10 --out "$OUT/dr" | grep -E "^\|"
        stamp drift;;
    steps)  # which action moves the token up for the rest of the process: footprint's order, then cuBLAS and torch first
        python3 bench/drift.py --steps alone,session,pipeline,tg16,tg128x3,free,cublas,torch --out "$OUT/s1" | grep -E "^\|"
        python3 bench/drift.py --steps alone,cublas,torch,session,pipeline,tg16,tg128x3 --out "$OUT/s2" | grep -E "^\|"
        stamp steps;;
    bisect)  # which part of tg128 moves the token: the positions reached (tg32..tg128, pf160) or the launches (tg16x24)
        python3 bench/drift.py --steps alone,session,pipeline,tg16x24,tg32,tg64,tg96,tg128 --step-s 4 --out "$OUT/b1" | grep -E "^\|"
        python3 bench/drift.py --steps alone,session,pipeline,pf160,tg128 --step-s 4 --out "$OUT/b2" | grep -E "^\|"
        stamp bisect;;
    cause)  # the recorder's events kept alive (tgb: returned each run; ev: events alone) or the launches (gl: no events)
        python3 bench/drift.py --steps alone,session,pipeline,tgb16x24,tgb128x3 --step-s 4 --out "$OUT/c1" | grep -E "^\|"
        python3 bench/drift.py --steps alone,ev512,ev1024,ev2048 --step-s 4 --out "$OUT/c2" | grep -E "^\|"
        python3 bench/drift.py --steps alone,session,pipeline,tg16,gl1024 --step-s 4 --out "$OUT/c3" | grep -E "^\|"
        python3 bench/drift.py --steps alone,session,pipeline,tg16,gt1024 --step-s 4 --out "$OUT/c4" | grep -E "^\|"
        stamp cause;;
    which)  # any second token's launches, or only the pipeline's; and how many of the pipeline's (w2, run last)
        python3 bench/drift.py --steps alone,bo1024,bt1024,bt1024 --step-s 4 --out "$OUT/w1" | by_action; stamp w1
        # a second bench token with CuPy's fills of its position before each 16, as gl and gt fill the pipeline's
        python3 bench/drift.py --steps alone,bf1024 --step-s 4 --out "$OUT/w3" | by_action; stamp w3
        # the second bench token's launches with a session and its pipeline alive (made, never launched)
        python3 bench/drift.py --steps alone,session,pipeline,bt1024 --step-s 4 --out "$OUT/w4" | by_action; stamp w4
        # last (the longest): after how many of the pipeline's launches
        python3 bench/drift.py --steps alone,session,pipeline,tg16,gl128,gl128,gl256,gl512 --step-s 3 --out "$OUT/w2" \
            | by_action
        stamp which;;
    carveout)  # which's fills step the token: any kernel without our carveout preference, or CuPy's; and does
        # a kernel that makes every SM take our preference set it back
        python3 bench/drift.py --steps alone,bn1024,rc,bk1024 --step-s 4 --out "$OUT/v1" | by_action; stamp v1
        python3 bench/drift.py --steps alone,bk1024,bf1024,rc --step-s 4 --out "$OUT/v2" | by_action; stamp v2
        # sm_config_reset in the pipeline: 24 runs of 16 tokens (which stepped it at 9f332de), CuPy's fills, one run
        python3 bench/drift.py --steps alone,session,pipeline_reset,tg16x24,bf1024,tg16 --step-s 4 --out "$OUT/v3" \
            | by_action; stamp v3
        stamp carveout;;
    foreign)  # which operation from outside the token's module steps it: a kernel of its own module (own_reset's
        # fill_words) launched alone or as a graph, a memset (CuPy's fill(0), as the pipeline emptied its cache),
        # copies in and out; and the optimized pipeline's runs with own_reset, then without it (as optimized is).
        # The six processes' files come back as one, foreign.tar (8 files at most)
        python3 bench/drift.py --steps alone,bw1024 --step-s 4 --out "$OUT/f1" | by_action; stamp f1
        python3 bench/drift.py --steps alone,bg1024 --step-s 4 --out "$OUT/f2" | by_action; stamp f2
        python3 bench/drift.py --steps alone,bm1024 --step-s 4 --out "$OUT/f3" | by_action; stamp f3
        python3 bench/drift.py --steps alone,bh1024,bd1024 --step-s 4 --out "$OUT/f4" | by_action; stamp f4
        python3 bench/drift.py --steps alone,session,pipeline_own,tg16x24,pipeline,tg16x24 --step-s 4 \
            --out "$OUT/f5" | by_action
        # the driver loading every function of a module when the module loads, not at its first launch: whether the
        # step follows a foreign function's first load (CUDA_MODULE_LOADING, read once at the context's creation)
        CUDA_MODULE_LOADING=EAGER python3 bench/drift.py --steps alone,bn1024 --step-s 4 --out "$OUT/f6" | by_action
        (cd "$OUT" && tar -cf foreign.tar f? && rm -rf f?)
        stamp foreign;;
    decode)
        python3 bench/decode.py --out "$OUT/d" ${DECODE_CONFIGS:+--configs "$DECODE_CONFIGS"} \
            ${DECODE_PRESETS:+--presets "$DECODE_PRESETS"} ${DECODE_ISOLATE:+--isolate} \
            | grep -v -E "Deprecation|report\[" | tail -80
        stamp decode;;
    chain)  # a probe: if one of its experimental builds fails, the measurements above are already written
        python3 bench/persistent_chain.py --out "$OUT/c" | grep -E "^###|^\| (one|ring)" \
            || echo "persistent chain: FAILED (above)"
        stamp "persistent chain";;
    token)  # a probe: the whole token in one launch, checked against one launch a kernel before it is timed
        python3 bench/persistent_token.py --out "$OUT/t" | grep -E "^###|^\| (one|pers)" \
            || echo "persistent token: FAILED (above)"
        stamp "persistent token";;
    esac
done
# The device returns at most 8 files: the tables that need nothing but their JSON stay behind and are
# rendered here (render.render("<stem>.md.j2", r=<the JSON>): pdl_variants, persistent_chain, persistent_token).
rm -f "$OUT"/p96/*.md "$OUT"/p512/*.md "$OUT"/c/*.md "$OUT"/t/*.md
# The candidate's reviews (a folder a preset and prompt, review.md and .json each) as one file: ab.tar
if compgen -G "$OUT/ab_*" > /dev/null; then
    (cd "$OUT" && tar -cf ab.tar ab_* && rm -rf ab_*)
fi
