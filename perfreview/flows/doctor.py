"""``perfreview doctor``: the state of this machine that makes measurements noisy, as pyperf's
``system show`` reports it, with what to change (perfreview never changes it itself)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Check:
    what: str
    value: str
    ok: bool | None  # None: informational
    advice: str = ""


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def host_checks() -> list[Check]:
    out = []
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    out.append(Check("CPU frequency governor", governor or "unknown (no cpufreq)",
                     None if governor is None else governor == "performance",
                     "" if governor in (None, "performance") else
                     "the host loop between tokens runs at a varying clock: `cpupower frequency-set -g performance`"))
    no_turbo = _read("/sys/devices/system/cpu/intel_pstate/no_turbo")
    if no_turbo is not None:
        out.append(Check("CPU turbo", "off" if no_turbo == "1" else "on", no_turbo == "1",
                         "" if no_turbo == "1" else "turbo makes the host clock depend on temperature and load"))
    isolated = _read("/sys/devices/system/cpu/isolated") or ""
    out.append(Check("isolated CPUs", isolated or "none", None,
                     "" if isolated else "isolate a CPU (isolcpus=) and pin the run to it with --cpu"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cpus = os.cpu_count() or 1
    out.append(Check("load average (1 min)", f"{load:.2f} on {cpus} CPUs", load < 0.5 * cpus,
                     "" if load < 0.5 * cpus else "other work is running: it competes with the host loop"))
    aslr = _read("/proc/sys/kernel/randomize_va_space")
    if aslr is not None:
        out.append(Check("ASLR", aslr, None))
    return out


def gpu_checks() -> list[Check]:
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception as exc:  # no NVML, no driver, no GPU
        return [Check("GPU", f"not available ({type(exc).__name__})", None)]
    n = pynvml
    out = [Check("GPU", str(n.nvmlDeviceGetName(h)), None)]

    def add(what: str, get: Any, ok: Any = None, advice: str = "") -> None:
        try:
            value = get()
        except Exception:
            return
        good = ok(value) if ok else None
        out.append(Check(what, str(value), good, "" if good in (None, True) else advice))

    add("persistence mode", lambda: "on" if n.nvmlDeviceGetPersistenceMode(h) else "off", lambda v: v == "on",
        "the driver unloads between runs: `nvidia-smi -pm 1` (as root, on a machine you own)")
    add("performance state", lambda: f"P{n.nvmlDeviceGetPerformanceState(h)}")
    add("SM clock now / max (MHz)", lambda: f"{n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)} / "
        f"{n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_SM)}")
    add("application clocks locked", lambda: n.nvmlDeviceGetApplicationsClock(h, n.NVML_CLOCK_SM), None)
    add("temperature (C)", lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU), lambda v: v < 80,
        "a hot GPU throttles its clock")
    add("throttle reasons", lambda: hex(n.nvmlDeviceGetCurrentClocksEventReasons(h)),
        lambda v: int(v, 16) & ~0x1 == 0, "the clock is held down right now (power, thermal or sync boost)")
    add("power limit (W)", lambda: n.nvmlDeviceGetEnforcedPowerLimit(h) / 1000)
    return out


def doctor() -> list[Check]:
    return host_checks() + gpu_checks()
