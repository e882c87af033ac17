"""Per decode token of stored runs traced with CUPTI: where the traced kernels fall inside the
token's CUDA-event window (the two clocks' agreement). Usage: bench/cupti_alignment.py RUNS_DIR"""

import glob
import sys

from perfreview.trace import runs

for path in sorted(glob.glob(sys.argv[1] + "/2026*")):
    r = runs.read_run(path)
    d = r.events[r.events["phase"] == "decode"]
    k = d[d["kind"] == "kernel"].groupby(["repeat", "token"]).agg(ks=("start_ns", "min"), ke=("end_ns", "max"))
    t = d[(d["kind"] == "gpu_range") & (d["name"] == "token")].groupby(["repeat", "token"]).agg(
        ts=("start_ns", "min"), te=("end_ns", "max"))
    j = k.join(t, how="inner")
    print(r.meta.config_label, len(j), "tokens; µs, median [p5, p95]")
    for name, v in (("first kernel - token event start", j.ks - j.ts), ("token event end - last kernel", j.te - j.ke),
                    ("kernels span", j.ke - j.ks), ("event span", j.te - j.ts)):
        v = v / 1e3
        print(f"  {name}: {v.median():.1f} [{v.quantile(0.05):.1f}, {v.quantile(0.95):.1f}]")
