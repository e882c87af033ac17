"""Import speed and memory at 100k, 2M and 10M Kineto events, beside Meta's HolisticTraceAnalysis
loading the same trace and computing its kernel and idle-time breakdowns (issue 10). CPU only.

Each measured command runs in a fresh process; its peak memory is the peak of the sum of the
resident sets of the process and all its children (our importer parses in worker processes),
sampled every 20 ms from /proc. Traces come from bench/kineto_gen.py (a decode loop's shape).
Writes import_scale.json and import_scale.md (the table printed).

    python bench/import_scale.py --out reports/bench --hta-python /tmp/hta-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.kineto_gen import write_kineto  # noqa: E402
from bench.outputs import save  # noqa: E402
from perfreview.trace.meta import git_info  # noqa: E402

HTA_SCRIPT = """
import sys, time
from hta.trace_analysis import TraceAnalysis
t = time.time()
a = TraceAnalysis(trace_dir=sys.argv[1])
load = time.time() - t
types, kernels = a.get_gpu_kernel_breakdown(visualize=False)
idle = a.get_idle_time_breakdown(visualize=False)[0]
print("kernels", len(kernels), "idle rows", len(idle), "load_s", round(load, 2))
"""


COMMANDS = {"import": "import", "import_marker": "import + marker", "report": "report", "compare": "compare",
            "plot_timeline": "plot timeline", "export_perfetto": "export perfetto"}


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            pass
    return total


def measure(cmd: list[str]) -> dict:
    """Wall seconds, peak resident bytes of the process tree, exit code and the last output line."""
    peak = [0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.join()
    lines = [line for line in out.strip().splitlines() if line.strip()]
    return {"seconds": round(wall, 2), "peak_gb": round(peak[0] / 1e9, 2), "rc": proc.returncode,
            "last_line": lines[-1][:200] if lines else ""}


def machine() -> dict:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": model, "cores": os.cpu_count(), "memory_gb": round(mem / 1e9, 1),
            "python": platform.python_version()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 2_000_000, 10_000_000])
    ap.add_argument("--work", type=Path, default=Path("/tmp/perfreview-import-bench"), help="traces and runs")
    ap.add_argument("--hta-python", help="a python with holistictraceanalysis installed (skipped without)")
    ap.add_argument("--out", type=Path, required=True, help="folder for import_scale.json/.md")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "perfreview.cli"]
    rows = []
    for size in args.sizes:
        folder = args.work / f"k{size}"
        trace = folder / "rank0.json"
        if not trace.exists():
            folder.mkdir(exist_ok=True)
            write_kineto(trace, size)
        row = {"events": size, "file_mb": round(trace.stat().st_size / 1e6)}
        runs_dir = args.work / "runs"
        marker = ["--token-marker", "token", "--blocks", "10"]  # ten blocks of tokens: repeats to compare
        for label, extra in (("import", []), ("import_marker", marker)):
            shutil.rmtree(runs_dir, ignore_errors=True)
            row[label] = measure(cli + ["import", "kineto", str(trace), "--runs-dir", str(runs_dir), "--quiet",
                                        "--name", "t"] + extra)
        measure(cli + ["import", "kineto", str(trace), "--runs-dir", str(runs_dir), "--quiet", "--name", "t2"] + marker)
        run = str(runs_dir / "t")
        row["report"] = measure(cli + ["report", run, "--out", str(args.work / "report.md"), "--quiet"])
        row["compare"] = measure(cli + ["compare", run, str(runs_dir / "t2"), "--out", str(args.work / "cmp.md"),
                                        "--quiet"])
        row["plot_timeline"] = measure(cli + ["plot", "timeline", run, "--out", str(args.work / "tl.png")])
        row["export_perfetto"] = measure(cli + ["export", "perfetto", run, "--out", str(args.work / "x.json")])
        if args.hta_python:
            row["hta"] = measure([args.hta_python, "-c", HTA_SCRIPT, str(folder)])
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"machine": machine(), "git": git_info(), "rows": rows,
              "what": "perfreview import kineto (without and with --token-marker), then report; HTA: TraceAnalysis "
                      "load + get_gpu_kernel_breakdown + get_idle_time_breakdown; peak = process tree RSS"}
    save(args.out, "import_scale", report, commands=COMMANDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
