"""GPU task (issue 9): does NVTX through CUPTI work here? One device call.

CUPTI records NVTX ranges (activity kind MARKER) only when the NVTX library injects it: the
environment variable NVTX_INJECTION64_PATH must name the libcupti that cupti-python loaded, before
the first NVTX call. A known CUPTI 13.0 crash (NVIDIA/NVTX#125) makes that unsafe, so each try runs
in a child process: a crash is a finding, not the end of the probe. The child pushes NVTX ranges
(through the ``nvtx`` package, with cached attributes as the recorder does) around a few CuPy
kernels, flushes, and prints what CUPTI recorded. Prints one line per try and writes
nvtx_probe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys
from cupti import cupti
import cupy as cp
records = []
def requested():
    return 1 << 20, 0
def completed(acts):
    for a in acts:
        k = int(a.kind)
        if k == int(cupti.ActivityKind.MARKER):
            records.append({"kind": "MARKER", "flags": int(a.flags), "id": int(a.id),
                            "timestamp": int(a.timestamp), "name": str(a.name or ""),
                            "domain": str(getattr(a, "domain", "") or "")})
        elif k == int(cupti.ActivityKind.CONCURRENT_KERNEL):
            records.append({"kind": "KERNEL", "name": str(a.name), "start": int(a.start), "end": int(a.end)})
variant = sys.argv[2]
import nvtx
def enable():
    cupti.activity_register_callbacks(requested, completed)
    for kind in (cupti.ActivityKind.MARKER, cupti.ActivityKind.CONCURRENT_KERNEL):
        cupti.activity_enable(kind)
if variant != "enable_after_nvtx":
    enable()
if variant == "global_ranges":  # the default domain, plain push/pop
    push, pop = nvtx.push_range, nvtx.pop_range
else:  # a domain with cached attributes, as the recorder does
    domain = nvtx.get_domain("perfreview")
    attrs = {n: domain.get_event_attributes(message=n) for n in ("token", "rmsnorm", "gemv")}
    push, pop = (lambda n: domain.push_range(attrs[n])), domain.pop_range
x = cp.ones(1 << 20, cp.float32)
for t in range(int(sys.argv[1])):
    if variant == "enable_after_nvtx" and t == 1:
        enable()
    push("token")
    for n in ("rmsnorm", "gemv"):
        push(n)
        x = x * 1.0001
        pop()
    pop()
cp.cuda.runtime.deviceSynchronize()
cupti.activity_flush_all(1)
print(json.dumps(records))
"""


def libcupti_path() -> str:
    """The libcupti that cupti-python loads, read from this process's memory map once loaded."""
    from cupti import cupti

    cupti.get_timestamp()  # loads the library
    for line in Path("/proc/self/maps").read_text().splitlines():
        if "libcupti" in line:
            return line.split()[-1]
    raise RuntimeError("libcupti not mapped after loading cupti-python")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lib = libcupti_path()
    import importlib.metadata as md

    result = {"libcupti": lib, "cupti_python": md.version("cupti-python"), "tries": []}
    tries = [(False, "domain"), (True, "domain"), (True, "global_ranges"), (True, "enable_after_nvtx")]
    for inject, variant in tries:
        env = dict(os.environ)
        env.pop("NVTX_INJECTION64_PATH", None)
        if inject:
            env["NVTX_INJECTION64_PATH"] = lib
        done = subprocess.run([sys.executable, "-c", CHILD, str(args.tokens), variant], env=env, capture_output=True,
                              text=True, timeout=120)
        try:
            records = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else []
        except (json.JSONDecodeError, IndexError):
            records = []
        markers = [r for r in records if r["kind"] == "MARKER"]
        named = sorted({r["name"] for r in markers if r["name"]})
        tri = {"inject": inject, "variant": variant, "returncode": done.returncode,
               "kernels": sum(r["kind"] == "KERNEL" for r in records),
               "marker_records": len(markers), "marker_names": named, "stderr_tail": done.stderr[-800:],
               "first_markers": markers[:8]}
        result["tries"].append(tri)
        status = "crashed (signal %d)" % -done.returncode if done.returncode < 0 else f"exit {done.returncode}"
        print(f"NVTX_INJECTION64_PATH {'set' if inject else 'unset'}, {variant}: {status}, "
              f"{tri['kernels']} kernel records, "
              f"{len(markers)} marker records, names {named}")
    (args.out / "nvtx_probe.json").write_text(json.dumps(result, indent=1))
    print(f"libcupti: {lib} (cupti-python {result['cupti_python']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
