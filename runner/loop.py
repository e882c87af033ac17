"""Driving the decode loop: weights once per device, one pipeline per config, repeats in rounds.

A repeat = empty KV cache, prefill the prompt token by token, decode N tokens greedily (each
feeding the next). Every repeat does the same work, so repeats are comparable samples. Several
configs run in rounds: each round runs every config once, in a seeded random order, so drift of
the machine and position in the round hit every config alike (and the pairing is recorded).
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from perfreview.trace.meta import RepeatInfo, RunMeta, new_run_id
from runner import config as cfg
from runner.affinity import pinned
from runner.device import Device, open_device
from runner.model import init_weights
from runner.pipeline import Pipeline
from runner.presets import Preset, get_preset
from runner.provenance import run_meta
from runner.recorder import Recorder
from runner.spec import RunSpec, check_spec


@dataclass
class RunResult:
    """What a run produced: schema rows and metadata (perfreview.trace turns these into files)."""

    rows: list[dict]
    meta: RunMeta

    @property
    def run_id(self) -> str:
        return self.meta.run


class Session:
    """A device and one model's weights (shared by every config run on it)."""

    def __init__(self, preset: str, device: str, seed: int, host_wait: str = "block") -> None:
        self.preset: Preset = get_preset(preset)
        self.device: Device = open_device(device, host_wait)
        self.seed = seed
        self.weights = init_weights(self.preset, seed, self.device.xp)
        self.device.synchronize_all()

    def prompt(self, n: int) -> list[int]:
        rng = np.random.default_rng(self.seed + 1)
        return [int(t) for t in rng.integers(0, self.preset.vocab, size=n)]

    def pipeline(self, config: cfg.Config, timing: str, trace: str = "",
                 function_every: int = 1) -> tuple[Pipeline, Recorder]:
        missing = cfg.not_built(config.switches) if self.device.is_gpu else []
        if missing:
            raise cfg.NotBuiltError(f"switch {', '.join(missing)} is reserved but not built yet on the GPU")
        switches = cfg.effective(config, self.device.is_gpu)
        rec = Recorder(self.device, timing, trace=trace, function_every=function_every)
        return Pipeline(self.preset, self.weights, self.device, switches, rec), rec


def generate(pipe: Pipeline, prompt: list[int], n_tokens: int, rec: Recorder | None = None) -> list[int]:
    """Prefill then greedy decode; returns the ``n_tokens`` decoded ids."""
    pipe.reset()
    nxt = 0
    for pos, tok in enumerate(prompt):
        if rec:
            rec.token, rec.phase = pos, "prefill"
        nxt = pipe.step(tok, pos)
    if pipe.run_ahead and n_tokens:  # queued: no per-token wait, the picks come back at the end
        pipe.start_queue(len(prompt))
        for i in range(n_tokens):
            if rec:
                rec.token, rec.phase = len(prompt) + i, "decode"
            picks = pipe.queue(last=i == n_tokens - 1)
        return picks or []
    out = []
    for i in range(n_tokens):
        pos = len(prompt) + i
        if rec:
            rec.token, rec.phase = pos, "decode"
        nxt = pipe.step(nxt, pos)
        out.append(nxt)
    return out


def run_repeat(session: Session, pipe: Pipeline, rec: Recorder, spec: RunSpec, repeat: int,
               prompt: list[int]) -> tuple[list[dict], RepeatInfo, list[int]]:
    dev = session.device
    for stream in dev.streams:
        dev.synchronize(stream)
    energy0 = dev.energy_mj() if dev.is_gpu else None
    # The collector's pauses land on random tokens; collect now, none during the repeat. Freezing what
    # survives keeps later collections short as the recorded rows pile up over many rounds.
    gc.collect()
    gc.freeze()
    gc.disable()
    t0 = time.perf_counter_ns()
    rec.start_repeat()
    try:
        generated = generate(pipe, prompt, spec.tokens, rec)
    finally:
        gc.enable()
    for stream in dev.streams:
        dev.synchronize(stream)
    t1 = time.perf_counter_ns()
    energy1 = dev.energy_mj() if dev.is_gpu else None
    rows = rec.finish_repeat(repeat)
    info = RepeatInfo(repeat=repeat, wall_ns=t1 - t0)
    if energy0 is not None and energy1 is not None:
        info.energy_j = (energy1 - energy0) / 1000.0
    if dev.is_gpu:
        for key, value in dev.clocks().items():
            setattr(info, key, value)
    return rows, info, generated


def run_configs(spec: RunSpec, configs: list[cfg.Config], session: Session | None = None,
                progress: Callable[[int, int], None] | None = None) -> list[RunResult]:
    """Run each config ``spec.repeats`` times in rounds (every config once per round, in a seeded
    random order), so drift of the machine hits every config alike. One config gives a plain run."""
    rounds = Interleaved(spec, configs, session)
    rounds.run(spec.repeats, progress)
    return rounds.results()


@dataclass
class _Side:
    spec: RunSpec
    pipe: Pipeline
    rec: Recorder
    run_id: str
    rows: list[dict]
    repeats: list[RepeatInfo]
    generated: list[int] | None = None
    injected: dict[str, float] | None = None
    twin_of: "_Side | None" = None  # an untraced copy of a traced side: measures what tracing costs


def decode_span_ns(rows: list[dict]) -> int | None:
    """First decode token's start to the last one's end, from the recorder's host token rows."""
    spans = [(r["start_ns"], r["end_ns"]) for r in rows if r["kind"] == "token" and r["phase"] == "decode"]
    return max(e for _, e in spans) - min(s for s, _ in spans) if spans else None


class Interleaved:
    """Configs set up once (warm-up, capture) and run in rounds, as many as asked, in steps: a
    sequential comparison looks at the data after 10, 20, 40 ... rounds and asks for more."""

    def __init__(self, spec: RunSpec, configs: list[cfg.Config], session: Session | None = None) -> None:
        check_spec(spec)
        self.spec = spec
        self.session = session or Session(spec.preset, spec.device, spec.seed, spec.host_wait)
        self.prompt = self.session.prompt(spec.prompt_tokens)
        self.rounds = 0
        self.instances = 1  # pipeline instances per side so far (fresh_every)
        self._orders = np.random.default_rng(spec.order_seed)
        with pinned(spec.cpu):
            self.sides = [self._side(config) for config in configs]
            # --trace cupti: each config also runs untraced in every round, so the run can say what
            # tracing cost it (an interleaved pair, not two separate runs)
            self.sides += [self._side(s.spec.config, trace="", twin_of=s) for s in list(self.sides) if spec.trace]

    def _side(self, config: cfg.Config, trace: str | None = None, twin_of: _Side | None = None) -> _Side:
        spec = self.spec
        trace = spec.trace if trace is None else trace
        pipe, rec = self.session.pipeline(config, spec.timing, trace, spec.function_every)
        injected = self._calibrate(config, pipe)
        self._warm(pipe)
        side_spec = RunSpec(**{**spec.__dict__, "config": config, "trace": trace})
        return _Side(side_spec, pipe, rec, new_run_id(spec.preset, config.label), [], [], injected=injected,
                     twin_of=twin_of)

    def _warm(self, pipe: Pipeline) -> None:
        """Compile kernels, create handles, capture the graph, touch memory; nothing recorded."""
        spec = self.spec
        generate(pipe, self.prompt[: max(1, min(len(self.prompt), spec.warmup_tokens))], spec.warmup_tokens)

    def _fresh_instances(self) -> None:
        """Every side gets a new pipeline (and recorder), all old ones released first, the new ones
        made in a random order: which memory, streams and graph a config gets is then random per
        block of rounds instead of fixed for the run. The injected delay keeps its calibration."""
        delays = [s.pipe.delay_ns for s in self.sides]
        for s in self.sides:
            s.pipe = None  # type: ignore[assignment]
        gc.collect()
        for i in self._orders.permutation(len(self.sides)):
            side = self.sides[int(i)]
            side.pipe, side.rec = self.session.pipeline(side.spec.config, self.spec.timing, side.spec.trace,
                                                        self.spec.function_every)
            side.pipe.set_delay_ns(delays[int(i)])
            self._warm(side.pipe)
        self.instances += 1

    def _calibrate(self, config: cfg.Config, pipe: Pipeline) -> dict[str, float]:
        """``inject_slowdown_pct``: time this config's token without the delay (a twin pipeline,
        warmed up), then size the delay to that percentage of it."""
        pct = float(config.switches.get("inject_slowdown_pct") or 0)
        if not pct:
            return {}
        twin, _ = self.session.pipeline(config.with_switches(inject_slowdown_pct=0), self.spec.timing)
        n = max(self.spec.tokens, 16)
        generate(twin, self.prompt[:1], n)  # warm-up (kernels, graph capture)
        t0 = time.perf_counter_ns()
        generate(twin, self.prompt[:1], n)
        token_ns = (time.perf_counter_ns() - t0) / (n + 1)
        del twin
        delay_ns = int(round(token_ns * pct / 100))
        pipe.set_delay_ns(delay_ns + pipe.delay_ns)
        return {"slowdown_pct": pct, "token_us": token_ns / 1e3, "delay_us": delay_ns / 1e3}

    def run(self, rounds: int, progress: Callable[[int, int], None] | None = None) -> None:
        """``rounds`` more rounds, each side once per round in a seeded random order; ``progress``
        is told (rounds done, rounds asked) after each."""
        with pinned(self.spec.cpu):
            for done in range(rounds):
                r = self.rounds
                if self.spec.fresh_every and r and r % self.spec.fresh_every == 0:
                    self._fresh_instances()
                order = self._orders.permutation(len(self.sides)) if len(self.sides) > 1 else [0]
                for position, i in enumerate(order):
                    side = self.sides[int(i)]
                    rows, info, generated = run_repeat(self.session, side.pipe, side.rec, side.spec, r, self.prompt)
                    info.round, info.order, info.decode_ns = r, position, decode_span_ns(rows)
                    info.instance = self.instances - 1
                    if side.twin_of is None:
                        side.rows.extend(rows)
                    side.repeats.append(info)
                    if side.generated is None:
                        side.generated = generated
                for twin in (s for s in self.sides if s.twin_of is not None):
                    twin.twin_of.repeats[-1].untraced_decode_ns = twin.repeats[-1].decode_ns
                self.rounds += 1
                if progress:
                    progress(done + 1, rounds)

    def results(self) -> list[RunResult]:
        """One run per config with every round so far (rows are shared, not copied)."""
        out = []
        for side in (s for s in self.sides if s.twin_of is None):
            meta = run_meta(self.session, replace(side.spec, repeats=self.rounds), side.run_id)
            meta.per_repeat = list(side.repeats)
            meta.prompt = self.prompt
            meta.generated = side.generated or []
            meta.interleaved_with = [s.run_id for s in self.sides if s is not side and s.twin_of is None]
            fresh = (f"; fresh pipeline instances every {self.spec.fresh_every} rounds, made in a random order"
                     if self.spec.fresh_every else "")
            meta.interleaving = (f"rounds: every config once per round, in a random order (seed {self.spec.order_seed})"
                                 + fresh if len(self.sides) > 1 else "")
            meta.graph_captures = side.pipe.captures
            meta.injected = side.injected or {}
            out.append(RunResult(side.rows, meta))
        return out
