"""Backends: the few things the decode loop needs from a device, for NumPy and for CuPy.

The loop is written once over ``xp`` (NumPy or CuPy); what differs -- streams, events, pinned
memory, copies, synchronisation, the delay spin -- lives here.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any, ContextManager, Protocol

import numpy as np


class DeviceError(RuntimeError):
    """The device asked for cannot be used (the message says why)."""


class Device(Protocol):
    """What the decode loop, the recorder and the run's provenance need from a backend."""

    name: str
    is_gpu: bool
    xp: Any  # numpy or cupy
    compute_dtype: Any
    streams: list[Any]

    def new_stream(self) -> Any: ...
    def stream_index(self, stream: Any) -> int: ...
    def stream_ids(self) -> dict[int, int]: ...
    def use(self, stream: Any) -> ContextManager[Any]: ...
    def empty_host(self, shape: Any, dtype: Any, pinned: bool) -> np.ndarray: ...
    def upload(self, a: np.ndarray) -> Any: ...
    def copy_h2d(self, dst: Any, src: np.ndarray, stream: Any) -> None: ...
    def copy_d2h(self, dst: np.ndarray, src: Any, stream: Any) -> None: ...
    def synchronize(self, stream: Any) -> None: ...
    def synchronize_all(self) -> None: ...
    def event(self) -> Any: ...
    def record(self, event: Any, stream: Any) -> None: ...
    def wait(self, stream: Any, event: Any) -> None: ...
    def elapsed_ns(self, start: Any, end: Any) -> int: ...
    def spin_until(self, event: Any) -> None: ...
    def spin_ns(self, ns: int, stream: Any) -> None: ...
    def energy_mj(self) -> int | None: ...
    def why_no_energy(self) -> str: ...
    def clocks(self) -> dict[str, Any]: ...
    def info(self) -> dict[str, Any]: ...


class CpuDevice:
    """NumPy on the host. Streams and events are placeholders so the loop stays the same."""

    name = "cpu"
    is_gpu = False
    xp = np
    compute_dtype = np.float32  # NumPy has no fast fp16 matmul; weights are fp16-rounded

    def __init__(self) -> None:
        self.streams = [None]

    def new_stream(self) -> Any:
        self.streams.append(None)
        return None

    def stream_index(self, stream: Any) -> int:
        return 0

    def stream_ids(self) -> dict[int, int]:
        return {}  # no driver streams (and no CUPTI) on the host

    def use(self, stream: Any) -> ContextManager[Any]:
        return _NullContext()

    def empty_host(self, shape: Any, dtype: Any, pinned: bool) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def upload(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=self.compute_dtype) if a.dtype == np.float16 else np.array(a)

    def copy_h2d(self, dst: np.ndarray, src: np.ndarray, stream: Any) -> None:
        np.copyto(dst[: src.size].reshape(src.shape), src)

    def copy_d2h(self, dst: np.ndarray, src: np.ndarray, stream: Any) -> None:
        np.copyto(dst.reshape(src.shape), src)

    def synchronize(self, stream: Any) -> None:
        pass

    def synchronize_all(self) -> None:
        pass

    def event(self) -> Any:
        return None

    def record(self, event: Any, stream: Any) -> None:
        pass

    def wait(self, stream: Any, event: Any) -> None:
        pass

    def elapsed_ns(self, start: Any, end: Any) -> int:
        raise DeviceError("the CPU backend has no device events")

    def spin_ns(self, ns: int, stream: Any) -> None:
        end = time.perf_counter_ns() + ns
        while time.perf_counter_ns() < end:
            pass

    def energy_mj(self) -> int | None:
        return None

    def why_no_energy(self) -> str:
        return "CPU backend"

    def clocks(self) -> dict[str, Any]:
        return {}

    def info(self) -> dict[str, Any]:
        return {
            "backend": "numpy",
            "name": platform.processor() or platform.machine(),
            "numpy": np.__version__,
            "cpu_count": os.cpu_count(),
        }


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None




class CudaDevice:
    """CuPy on one GPU. Every stream is non-blocking (graph capture needs that later)."""

    name = "cuda"
    is_gpu = True

    def __init__(self, device_id: int = 0, host_wait: str = "block") -> None:
        try:
            import cupy
        except Exception as exc:  # ImportError, or CUDA libraries missing
            raise DeviceError(f"CuPy is not usable: {exc}") from None
        try:
            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise DeviceError("no CUDA device found")
            cupy.cuda.Device(device_id).use()
        except cupy.cuda.runtime.CUDARuntimeError as exc:
            raise DeviceError(f"no usable CUDA device: {exc}") from None
        self.cp = cupy
        self.xp = cupy
        self.compute_dtype = np.float16
        self.device_id = device_id
        self.streams = [cupy.cuda.Stream(non_blocking=True)]
        from runner.own_kernels import SOURCE  # one source for every kernel of ours

        self._spin = cupy.RawModule(code=SOURCE.read_text(), options=("--std=c++17",)).get_function("spin_ns")
        self._nvml = _Nvml(device_id)
        self.spin_wait = host_wait == "spin"
        self._wait_event = cupy.cuda.Event(disable_timing=True)

    def new_stream(self) -> Any:
        s = self.cp.cuda.Stream(non_blocking=True)
        self.streams.append(s)
        return s

    def stream_index(self, stream: Any) -> int:
        return self.streams.index(stream)

    def stream_ids(self) -> dict[int, int]:
        """The driver's id of each of our streams (what CUPTI records carry) -> its index here, so
        traced work lands on the same timeline row as the stream's events. Empty where the driver
        lacks cuStreamGetId (before CUDA 12). A replayed graph may run kernels on streams of the
        driver's own: those keep their ids."""
        import ctypes

        try:
            get_id = ctypes.CDLL("libcuda.so.1").cuStreamGetId
        except (OSError, AttributeError):
            return {}
        out = {}
        for i, s in enumerate(self.streams):
            sid = ctypes.c_ulonglong(0)
            if get_id(ctypes.c_void_p(s.ptr), ctypes.byref(sid)) == 0:
                out[int(sid.value)] = i
        return out

    def use(self, stream: Any) -> Any:
        return stream

    def empty_host(self, shape: Any, dtype: Any, pinned: bool) -> np.ndarray:
        if pinned:
            import cupyx

            return cupyx.empty_pinned(shape, dtype=dtype)
        return np.empty(shape, dtype=dtype)

    def upload(self, a: Any) -> Any:
        return self.cp.asarray(a)

    def copy_h2d(self, dst: Any, src: np.ndarray, stream: Any) -> None:
        rt = self.cp.cuda.runtime
        rt.memcpyAsync(dst.data.ptr, src.ctypes.data, src.nbytes, rt.memcpyHostToDevice, stream.ptr)

    def copy_d2h(self, dst: np.ndarray, src: Any, stream: Any) -> None:
        rt = self.cp.cuda.runtime
        rt.memcpyAsync(dst.ctypes.data, src.data.ptr, src.nbytes, rt.memcpyDeviceToHost, stream.ptr)

    def synchronize(self, stream: Any) -> None:
        if not self.spin_wait:
            stream.synchronize()
            return
        # Spin on an event instead of the driver's wait: the host thread never sleeps, so it wakes
        # the moment the work ends (no scheduler wake-up latency in the token's critical path).
        self._wait_event.record(stream)
        self.spin_until(self._wait_event)

    def synchronize_all(self) -> None:
        """Whole device: work on the legacy default stream (allocation, init) does not order
        with our non-blocking streams, so setup ends with this."""
        self.cp.cuda.Device(self.device_id).synchronize()

    def event(self) -> Any:
        return self.cp.cuda.Event()

    def record(self, event: Any, stream: Any) -> None:
        event.record(stream)

    def wait(self, stream: Any, event: Any) -> None:
        stream.wait_event(event)

    def elapsed_ns(self, start: Any, end: Any) -> int:
        return int(round(self.cp.cuda.get_elapsed_time(start, end) * 1e6))

    def spin_until(self, event: Any) -> None:
        """Return the moment ``event`` has happened on the device (no sleep, no wake-up latency)."""
        while not event.done:
            pass

    def spin_ns(self, ns: int, stream: Any) -> None:
        with stream:
            self._spin((1,), (1,), (np.uint64(ns),))

    def energy_mj(self) -> int | None:
        return self._nvml.energy_mj()

    def why_no_energy(self) -> str:
        return self._nvml.why

    def clocks(self) -> dict[str, Any]:
        return self._nvml.clocks()

    def power_state(self) -> dict[str, Any]:
        return self._nvml.power_state()

    def info(self) -> dict[str, Any]:
        cp = self.cp
        props = cp.cuda.runtime.getDeviceProperties(self.device_id)
        rt = cp.cuda.runtime.runtimeGetVersion()
        drv = cp.cuda.runtime.driverGetVersion()
        info = {
            "backend": "cupy",
            "name": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
            "compute_capability": f"{props['major']}.{props['minor']}",
            "sm_count": props["multiProcessorCount"],
            "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
            "cuda_runtime": f"{rt // 1000}.{rt % 1000 // 10}",
            "cuda_driver_api": f"{drv // 1000}.{drv % 1000 // 10}",
            "cupy": cp.__version__,
            "numpy": np.__version__,
        }
        info.update(self._nvml.static_info())
        return info


class _Nvml:
    """NVML reads (energy, clocks, driver); every read is optional and says when it is absent."""

    def __init__(self, device_id: int) -> None:
        self.handle = None
        self.why = ""
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(device_id)
        except Exception as exc:
            self.why = f"NVML unavailable: {exc}"

    def static_info(self) -> dict[str, Any]:
        if self.handle is None:
            return {"driver": None, "nvml": self.why}
        n = self.nvml
        out: dict[str, Any] = {"driver": _text(n.nvmlSystemGetDriverVersion())}
        try:
            out["power_limit_w"] = n.nvmlDeviceGetEnforcedPowerLimit(self.handle) / 1000
            out["max_sm_clock_mhz"] = n.nvmlDeviceGetMaxClockInfo(self.handle, n.NVML_CLOCK_SM)
        except Exception:
            pass
        return out

    def energy_mj(self) -> int | None:
        if self.handle is None:
            return None
        try:
            return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception as exc:
            self.why = f"energy counter unsupported: {exc}"
            return None

    def clocks(self) -> dict[str, Any]:
        if self.handle is None:
            return {}
        n = self.nvml
        try:
            return {
                "sm_clock_mhz": n.nvmlDeviceGetClockInfo(self.handle, n.NVML_CLOCK_SM),
                "mem_clock_mhz": n.nvmlDeviceGetClockInfo(self.handle, n.NVML_CLOCK_MEM),
                "temperature_c": n.nvmlDeviceGetTemperature(self.handle, n.NVML_TEMPERATURE_GPU),
            }
        except Exception:
            return {}

    def power_state(self) -> dict[str, Any]:
        """The board's power now and why its clocks are held down (NVML's bit mask of clock event reasons, 0 when
        none): what a drift of the GPU over a run is read against."""
        if self.handle is None:
            return {}
        n = self.nvml
        out: dict[str, Any] = {}
        try:
            out["power_w"] = n.nvmlDeviceGetPowerUsage(self.handle) / 1000
            reasons = getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
                n.nvmlDeviceGetCurrentClocksThrottleReasons
            out["clock_event_reasons"] = int(reasons(self.handle))
        except Exception:
            pass
        try:  # the HBM's own temperature (a field of its own; the GPU's is in clocks())
            field = n.nvmlDeviceGetFieldValues(self.handle, [n.NVML_FI_DEV_MEMORY_TEMP])[0]
            if field.nvmlReturn == 0:
                out["memory_temperature_c"] = int(field.value.uiVal)
        except Exception:
            pass
        return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def capture_graph(stream: Any, launches: Any) -> Any:
    """What ``launches()`` queues on ``stream`` (a CuPy stream, not the legacy one), captured as one CUDA graph and
    uploaded; the capture ends even where ``launches`` raises."""
    stream.begin_capture()
    try:
        launches()
    finally:
        graph = stream.end_capture()
    graph.upload(stream)
    return graph


def gpu_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


HOST_WAITS = ("block", "spin")


def open_device(kind: str, host_wait: str = "block") -> Device:
    """``auto`` picks CUDA when a GPU is usable, else the CPU; ``cuda`` without one is an error.
    ``host_wait``: how the host waits for the GPU at a synchronize (the driver's wait, or a spin)."""
    if host_wait not in HOST_WAITS:
        raise DeviceError(f"unknown host wait {host_wait!r} (use block or spin)")
    if kind == "cpu":
        return CpuDevice()
    if kind == "cuda":
        return CudaDevice(host_wait=host_wait)
    if kind == "auto":
        return CudaDevice(host_wait=host_wait) if gpu_available() else CpuDevice()
    raise DeviceError(f"unknown device {kind!r} (use auto, cuda or cpu)")
