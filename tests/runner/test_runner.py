"""The runner on the CPU backend: configs agree, the math matches float64, events are complete."""

from __future__ import annotations

import numpy as np
import pytest

from perfreview.trace import runs, schema
from runner import config as cfg
from runner.check import check_configs, reference, teacher_forced
from runner.model import check_logits
from runner.own_kernels import NORM_SCALE_DEFINE, OVERLAP_DEFINES, RESID_DEEP_WHERE_ONE_WAVE, SMEM_CARVEOUT_DEFINE
from runner.loop import Session

SWITCH_SETTINGS = [
    ("async_copies", "on"), ("qkv_streams", "on"), ("inject_delay_us", "30"),
]


@pytest.fixture(scope="module")
def session() -> Session:
    return Session("tiny", "cpu", seed=0)


def all_configs() -> list[cfg.Config]:
    out = [cfg.resolve("baseline"), cfg.resolve("optimized")]
    out += [cfg.resolve("baseline", {k: v}) for k, v in SWITCH_SETTINGS]
    return out


def test_every_config_matches_reference_and_each_other(session):
    result = check_configs(session, all_configs(), n_steps=24, n_generate=16, prompt_tokens=6)
    assert result["same_tokens"], result["generated"]
    for label, res in result["configs"].items():
        assert res["ok"], (label, res)
        assert res["max_err_over_std"] < 1e-3  # float32 on the CPU: far inside fp16 tolerance
        assert res["decisive_steps"] >= 12  # the check is not vacuous: most steps are decisive
    generated = next(iter(result["generated"].values()))
    assert len(generated) == 16 and all(0 <= t < session.preset.vocab for t in generated)


def test_reference_catches_a_wrong_pipeline(session, monkeypatch):
    """Break RoPE's sign in the pipeline: the teacher-forced check must fail."""
    from runner import pipeline

    seq = session.prompt(12)
    ref = reference(session, seq)
    good = teacher_forced(session, cfg.resolve("baseline"), seq)
    assert check_logits(good, ref)["ok"]

    def bad_rope(self, x, cos, sin):
        half = self.p.head_dim // 2
        a, b = x[:, :half], x[:, half:]
        return np.concatenate([a * cos + b * sin, b * cos - a * sin], axis=1).astype(self.act)

    monkeypatch.setattr(pipeline.Pipeline, "_rope", bad_rope)
    bad = teacher_forced(session, cfg.resolve("baseline"), seq)
    assert not check_logits(bad, ref)["ok"]


def test_event_table_has_schema_and_one_row_per_function_per_token(cpu_runs):
    run = runs.read_run(cpu_runs["baseline"])
    ev = run.events
    assert list(ev.columns) == list(schema.COLUMNS)
    for col, dtype in schema.COLUMNS.items():
        assert str(ev[col].dtype) == dtype, col
    meta = run.meta
    n_layers = meta.model["n_layers"]
    decode = ev[(ev["phase"] == "decode") & (ev["kind"] == "range")]
    counts = decode.groupby(["repeat", "token", decode["name"].astype(str)], observed=True).size()
    expected = {"embedding": 1, "rope_table": 1, "lm_head": 1, "sample": 1, "output_copy": 1,
                "input_copy": 1, "qkv": n_layers, "q_proj": n_layers, "k_proj": n_layers,
                "v_proj": n_layers, "rope": n_layers, "kv_write": n_layers, "attention": n_layers,
                "o_proj": n_layers, "ffn": n_layers, "rmsnorm": 2 * n_layers + 1,
                "memcpy_h2d": 4, "memcpy_d2h": 1, "sync": 5}
    n_tokens = meta.tokens * meta.repeats
    for name, per_token in expected.items():
        got = counts.xs(name, level=2)
        assert len(got) == n_tokens, name
        assert (got == per_token).all(), (name, got.unique())
    tokens = ev[ev["kind"] == "token"]
    assert len(tokens) == (meta.tokens + meta.prompt_tokens) * meta.repeats
    assert (ev["end_ns"] >= ev["start_ns"]).all()


def test_async_copies_changes_sync_count_on_cpu_metadata(cpu_runs):
    """On the CPU the GPU-only switches are recorded as having no effect."""
    meta = runs.read_meta(cpu_runs["optimized"])
    assert meta.switches["async_copies"] is True
    assert "async_copies" in meta.switches_without_effect
    assert meta.switches_in_effect["async_copies"] is False


def test_metadata_complete(cpu_runs):
    meta = runs.read_meta(cpu_runs["baseline"])
    stored = meta.to_json()
    for key in ("schema_version", "tool_version", "created", "git", "device", "host", "preset", "model",
                "config", "switches", "timing", "tokens", "repeats", "clock", "per_repeat", "generated",
                "not_measured"):
        assert stored[key] not in (None, "", [], {}), key
    assert {"commit", "dirty"} <= set(meta.git)
    assert meta.device["backend"] == "numpy"
    assert len(meta.per_repeat) == meta.repeats
    assert any("GPU" in m["what"] for m in meta.not_measured)


def test_inject_delay_slows_tokens(session):
    """The delay switch adds a busy wait per token on the CPU too (a known regression)."""
    from runner.loop import run_configs
    from runner.spec import RunSpec

    spec = RunSpec(preset="tiny", tokens=6, repeats=1, device="cpu", prompt_tokens=2, warmup_tokens=1)
    fast, slow = run_configs(spec, [cfg.resolve("baseline"), cfg.resolve("baseline", {"inject_delay_us": "2000"})],
                             session=session)
    def decode_ns(rows):
        return sorted(r["end_ns"] - r["start_ns"] for r in rows if r["kind"] == "token" and r["phase"] == "decode")
    assert min(decode_ns(slow.rows)) >= 2_000_000
    assert fast.meta.generated == slow.meta.generated


def test_config_parsing_errors():
    with pytest.raises(ValueError, match="unknown config"):
        cfg.resolve("fastest")
    with pytest.raises(ValueError, match="unknown switch"):
        cfg.resolve("baseline", {"warp_drive": "on"})
    with pytest.raises(ValueError, match="takes on/off"):
        cfg.resolve("baseline", {"async_copies": "maybe"})
    assert cfg.parse_side("config=baseline,inject_delay_us=300").switches["inject_delay_us"] == 300
    assert cfg.resolve("baseline", {"async_copies": "on"}).label == "baseline+async_copies"
    assert cfg.not_built({"cuda_graph": True}) == ([] if cfg.SWITCHES["cuda_graph"].built else ["cuda_graph"])


def test_pdl_runs_our_kernels_and_optimized_leaves_out_what_was_measured_slower():
    pdl = cfg.resolve("baseline", {"pdl": "on"})
    assert cfg.effective(pdl, gpu=True)["own_kernels"] is True and cfg.kernel_family(pdl, gpu=True) == "own_kernels"
    assert cfg.effective(pdl, gpu=False)["pdl"] is False  # a GPU-only switch: no effect on the CPU
    optimized = cfg.resolve("optimized").switches
    assert {k for k, v in optimized.items() if v is True} == \
        (set(cfg.OPTIMIZATIONS) - set(cfg.NOT_IN_OPTIMIZED)) | set(cfg.TUNING_IN_OPTIMIZED)
    assert optimized["pdl"] and not optimized["qkv_streams"]


def test_calibrated_slowdown_is_sized_from_the_measured_token(session):
    from runner.loop import run_configs
    from runner.spec import RunSpec

    spec = RunSpec(preset="tiny", tokens=6, repeats=1, device="cpu", prompt_tokens=2, warmup_tokens=1)
    plain, slow = run_configs(spec, [cfg.resolve("baseline"), cfg.resolve("baseline", {"inject_slowdown_pct": "50"})],
                              session=session)
    inj = slow.meta.injected
    assert plain.meta.injected == {} and inj["slowdown_pct"] == 50
    assert inj["delay_us"] == pytest.approx(inj["token_us"] * 0.5, rel=1e-3)
    assert slow.meta.config_label == "baseline+inject_slowdown_pct=50.0"
    with pytest.raises(ValueError, match="between 0 and 100"):
        cfg.resolve("baseline", {"inject_slowdown_pct": "150"})


def test_run_ahead_implies_the_graph_and_has_no_effect_on_the_cpu():
    ahead = cfg.resolve("baseline", {"run_ahead": "on"})
    eff = cfg.effective(ahead, gpu=True)
    assert eff["cuda_graph"] is True and eff["own_kernels"] is True
    assert cfg.effective(ahead, gpu=False)["run_ahead"] is False


def test_run_ahead_loop_feeds_each_pick_on_the_device_and_returns_the_same_tokens(session):
    """The queued loop (``generate`` with ``run_ahead``) against the per-token loop, on the CPU model:
    a pipeline whose 'device' inputs are moved on by decode.cu's ``advance`` (its NumPy reference)
    after every token must pick exactly the tokens the host-fed loop picks."""
    from runner.loop import generate
    from runner.own_kernels import advance_reference

    pipe, _ = session.pipeline(cfg.resolve("baseline"), "tokens")
    prompt, n = session.prompt(3), 7
    expected = generate(pipe, prompt, n)

    class Queued:
        """The CPU pipeline driven as the GPU one is under run_ahead: inputs only from the device side."""
        run_ahead = True

        def __init__(self) -> None:
            self.tok, self.pos, self.slot = (np.zeros(1, np.int64) for _ in range(3))
            self.hist = np.full(session.preset.max_ctx, -1, np.int64)
            self.launches = 0

        def reset(self) -> None:
            pipe.reset()

        def step(self, token: int, pos: int) -> int:  # the prompt: host-fed, then advanced on the device
            pick = pipe.step(token, pos)
            self.tok[0], self.pos[0], self.slot[0] = token, pos, pos
            advance_reference(pick, self.tok, self.pos, self.slot, self.hist)
            return pick

        def start_queue(self, pos: int) -> None:
            assert int(self.pos[0]) == pos  # the prompt's last step left the position on the device
            self.first, self.count = pos, 0

        def queue(self, last: bool) -> list[int] | None:
            self.launches += 1
            self.count += 1
            pick = pipe.step(int(self.tok[0]), int(self.pos[0]))  # reads only what advance left
            advance_reference(pick, self.tok, self.pos, self.slot, self.hist)
            return [int(t) for t in self.hist[self.first: self.first + self.count]] if last else None

    queued = Queued()
    assert generate(queued, prompt, n) == expected
    assert queued.launches == n and int(queued.slot[0]) == len(prompt) + n


# optimized's overlap_tuning, smem_carveout and norm_as_scale defines (runner/own_kernels.py), after its other kernel
# defines
OVERLAP = (*OVERLAP_DEFINES, RESID_DEEP_WHERE_ONE_WAVE, SMEM_CARVEOUT_DEFINE, NORM_SCALE_DEFINE)


def test_attn_one_wave_bounds_our_attention_kernel_only():
    """The switch compiles decode.cu with attn_split bounded to 3 blocks an SM, needs our kernels (it
    implies them on a GPU), is off in optimized, and does nothing on the CPU backend."""
    on = cfg.resolve("baseline", {"attn_one_wave": "on"})
    eff = cfg.effective(on, gpu=True)
    assert eff["own_kernels"] and cfg.kernel_defines(eff) == ("-DATT_MIN_BLOCKS=3",)
    assert cfg.kernel_defines(cfg.effective(cfg.resolve("optimized"), gpu=True)) == (
        "-DEARLY_LOADS=1", "-DHOIST_LOADS=1", *OVERLAP)
    assert cfg.effective(on, gpu=False)["attn_one_wave"] is False
    assert "attn_one_wave" in cfg.not_in_effect(on, gpu=False)


def test_attn_four_blocks_replaces_attn_one_wave_and_is_checked():
    """Both set attn_split's blocks an SM (ATT_MIN_BLOCKS): with both on, one define, attn_four_blocks's; it
    implies our kernels, is off in optimized and `perfreview check` runs it."""
    from perfreview.flows import check

    both = cfg.effective(cfg.resolve("baseline", {"attn_four_blocks": "on", "attn_one_wave": "on"}), gpu=True)
    assert both["own_kernels"] and cfg.kernel_defines(both) == ("-DATT_MIN_BLOCKS=4",)
    assert not cfg.resolve("optimized").switches.get("attn_four_blocks")
    assert any(c.switches.get("attn_four_blocks") for c in check.configs_to_check())


def test_attn_group_heads_builds_the_grouping_attention_and_is_checked():
    """The switch compiles decode.cu with ATT_GROUP=1, implies our kernels, combines with
    attn_one_wave, is off in optimized, and `perfreview check` runs it like every optimization."""
    from perfreview.flows import check

    on = cfg.effective(cfg.resolve("baseline", {"attn_group_heads": "on"}), gpu=True)
    assert on["own_kernels"] and cfg.kernel_defines(on) == ("-DATT_GROUP=1",)
    both = cfg.effective(cfg.resolve("baseline", {"attn_group_heads": "on", "attn_one_wave": "on"}), gpu=True)
    assert set(cfg.kernel_defines(both)) == {"-DATT_GROUP=1", "-DATT_MIN_BLOCKS=3"}
    assert not cfg.resolve("optimized").switches.get("attn_group_heads")
    assert any(c.switches.get("attn_group_heads") for c in check.configs_to_check())


def test_attn_fill_split_builds_the_filled_attention_and_is_checked():
    """The switch compiles decode.cu with ATT_FILL=2, implies our kernels, combines with the grouping,
    is off in optimized, and `perfreview check` runs it."""
    from perfreview.flows import check

    on = cfg.effective(cfg.resolve("baseline", {"attn_fill_split": "on"}), gpu=True)
    assert on["own_kernels"] and cfg.kernel_defines(on) == ("-DATT_FILL=2",)
    both = cfg.effective(cfg.resolve("baseline", {"attn_fill_split": "on", "attn_group_heads": "on"}), gpu=True)
    assert set(cfg.kernel_defines(both)) == {"-DATT_GROUP=1", "-DATT_FILL=2"}
    assert any(c.switches.get("attn_fill_split") for c in check.configs_to_check())
    # slower on the H100 at tg128 once smem_carveout was in optimized (config.py): a switch again
    assert not cfg.resolve("optimized").switches["attn_fill_split"]


def test_attn_fit_wave_replaces_the_fill_rule_and_is_checked():
    """The switch compiles decode.cu with ATT_FILL=3 and 5 positions a thread, implies our kernels, and
    with attn_fill_split on replaces the fill rule: one ATT_FILL reaches the compiler."""
    from perfreview.flows import check

    on = cfg.effective(cfg.resolve("baseline", {"attn_fit_wave": "on"}), gpu=True)
    assert on["own_kernels"] and cfg.kernel_defines(on) == ("-DATT_FILL=3", "-DATT_POS=5")
    over = cfg.effective(cfg.resolve("optimized", {"attn_fit_wave": "on"}), gpu=True)
    assert cfg.kernel_defines(over) == ("-DATT_FILL=3", "-DATT_POS=5", "-DEARLY_LOADS=1", "-DHOIST_LOADS=1",
                                        *OVERLAP)
    grouped = cfg.effective(cfg.resolve("baseline", {"attn_fit_wave": "on", "attn_group_heads": "on"}), gpu=True)
    assert set(cfg.kernel_defines(grouped)) == {"-DATT_GROUP=1", "-DATT_FILL=3", "-DATT_POS=5"}
    assert any(c.switches.get("attn_fit_wave") for c in check.configs_to_check())



def test_attn_share_kv_replaces_every_other_split_rule_and_is_checked():
    """The switch compiles decode.cu with attn_share and its split rule (ATT_FILL=4), implies our
    kernels and, on top of optimized or with attn_fit_wave on, is the only ATT_FILL that reaches the
    compiler."""
    from perfreview.flows import check

    on = cfg.effective(cfg.resolve("baseline", {"attn_share_kv": "on"}), gpu=True)
    assert on["own_kernels"] and cfg.kernel_defines(on) == ("-DATT_SHARE_KV=1", "-DATT_FILL=4")
    for base, extra in (("optimized", {}), ("baseline", {"attn_fit_wave": "on", "attn_fill_split": "on"})):
        both = cfg.effective(cfg.resolve(base, {"attn_share_kv": "on", **extra}), gpu=True)
        loads = ("-DEARLY_LOADS=1", "-DHOIST_LOADS=1", *OVERLAP) if base == "optimized" else ()
        assert cfg.kernel_defines(both) == ("-DATT_SHARE_KV=1", "-DATT_FILL=4", *loads)
    assert not cfg.resolve("optimized").switches["attn_share_kv"]
    assert any(c.switches.get("attn_share_kv") for c in check.configs_to_check())


def test_attn_merge_last_tells_our_forward_to_skip_the_merge_launch():
    """The switch reaches decode.cu's build as MERGE_LAST=1, implies our kernels, is off in optimized (measured:
    config.py's switch text), and `perfreview check` runs it; OwnForward reads it to pass attn_split the
    output and the tickets and leave out attn_combine."""
    from perfreview.flows import check
    from runner import own_kernels as ok

    on = cfg.effective(cfg.resolve("baseline", {"attn_merge_last": "on"}), gpu=True)
    assert on["own_kernels"] and cfg.kernel_defines(on) == (ok.MERGE_LAST_DEFINE,)
    assert ok.define_value(cfg.kernel_defines(on), "MERGE_LAST", 0) == 1
    assert not cfg.resolve("optimized").switches["attn_merge_last"]
    assert any(c.switches.get("attn_merge_last") for c in check.configs_to_check())


def test_attn_merge_in_oproj_tells_our_forward_to_skip_the_merge_launch():
    """The switch reaches decode.cu's build as MERGE_IN_OPROJ=1, implies our kernels, is off in
    optimized (and on top of it leaves out norm_as_scale, whose sums of squares the merge's o_proj does not
    write), is checked by `perfreview check`, and is what OwnForward reads to launch
    gemv_residual_merge in place of attn_combine + gemv_residual."""
    from perfreview.flows import check
    from runner import own_kernels as ok

    on = cfg.effective(cfg.resolve("optimized", {"attn_merge_in_oproj": "on"}), gpu=True)
    assert on["own_kernels"] and cfg.kernel_defines(on) == (ok.MERGE_DEFINE, ok.EARLY_DEFINE, ok.HOIST_DEFINE,
                                                            *OVERLAP[:-1])
    assert ok.define_value(cfg.kernel_defines(on), "MERGE_IN_OPROJ", 0) == 1
    assert ok.define_value(cfg.kernel_defines(cfg.effective(cfg.resolve("optimized"), gpu=True)),
                           "MERGE_IN_OPROJ", 0) == 0
    assert any(c.switches.get("attn_merge_in_oproj") for c in check.configs_to_check())
