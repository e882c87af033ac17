"""Markdown: renders, tables keep their column count with hostile names, digits follow intervals."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from markdown_it import MarkdownIt

from perfreview.compare.comparison import compare
from perfreview.report import render, review
from perfreview.trace import runs
from synthetic import make_pair

HOSTILE = {"ffn": "void k<float, 4>(T*) | `x` <b>", "sample": "std::vector<std::pair<int,int>>::at|*_"}


def table_rows(md: str):
    """(header cells, [row cells]) of every table in the rendered HTML, via markdown-it tokens."""
    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    tables, current, row = [], None, None
    for t in tokens:
        if t.type == "table_open":
            current = []
        elif t.type == "tr_open":
            row = 0
        elif t.type in ("th_open", "td_open"):
            row += 1
        elif t.type == "tr_close":
            current.append(row)
        elif t.type == "table_close":
            tables.append(current)
    return tables


def test_review_renders_with_hostile_names(tmp_path):
    a, b = (runs.read_run(p) for p in make_pair(tmp_path, b={"scale": {"ffn": 1.05}}, names=HOSTILE))
    cmp = compare([a], [b])
    md = review.review_markdown(cmp, [a], [b], {"timeline": "t.png"})
    for section in ("### Overview", "### Key findings", "### Throughput", "### Per-function deltas",
                    "### The gap between tokens", "### Methodology", "### Environment"):
        assert section in md
    tables = table_rows(md)
    assert len(tables) >= 5
    for cells in tables:
        assert len(set(cells)) == 1, cells  # every row has the header's column count
    html = MarkdownIt("commonmark").enable("table").render(md)
    assert "<b>" not in html  # names are text, not markup
    assert "regressed" in md and "void k" in md


def test_digits_follow_the_interval():
    assert render.with_ci(12.4137, 12.35, 12.48) == "12.41 [12.35, 12.48]"
    assert render.with_ci(12.4137, 11.0, 14.0) == "12.4 [11.0, 14.0]"  # ±1.5: two digits
    assert render.with_ci(12.4137, 8.0, 16.0) == "12 [8, 16]"  # ±4: one digit
    assert render.pct_ci(1.0143, 1.009, 1.019) == "+1.4% [+0.9, +1.9]"
    assert render.pct_ci(1.0209, 1.0066, 1.045) == "+2.1% [+0.7, +4.5]"
    row = SimpleNamespace(a=0.063, b=0.0631, ratio=1.0016, ci_low=0.996, ci_high=1.004, verdict="no change")
    assert render.change(row) == "within ±0.4%"


def test_md_escapes_table_breakers():
    assert "|" not in render.md("a|b").replace("\\|", "")
    assert render.md("`x`") == "\\`x\\`"
    assert render.md("<T>") == "\\<T\\>"


def test_run_report_renders(cpu_runs, tmp_path):
    run = runs.read_run(cpu_runs["functions"])
    md = review.run_markdown(run)
    assert "### Functions" in md and "attention" in md
    for cells in table_rows(md):
        assert len(set(cells)) == 1


def test_longer_waits_are_explained_as_moved_time(tmp_path):
    a, b = (runs.read_run(p) for p in make_pair(tmp_path, b={"sync_ns": 40_000, "scale": {"attention": 0.85}}))
    md = review.review_markdown(compare([a], [b]), [a], [b])
    assert "| sync | host |" in md and "time moved, not a slowdown" in md


def test_dollar_and_long_names_in_markdown_and_pictures(tmp_path):
    """clang lambdas ($_0) are not GitHub math and do not crash matplotlib; a 20k-character name is
    shortened in the picture."""
    from perfreview.plots import charts, style, timeline

    names = {"ffn": "auto f()::$_0::operator()<$T$>() const", "sample": "k" * 20_000}
    a, b = (runs.read_run(p) for p in make_pair(tmp_path, b={"scale": {"ffn": 1.05}}, names=names))
    md = review.review_markdown(compare([a], [b]), [a], [b])
    assert "\\$\\_0" in md and "$_0" not in md.replace("\\$\\_0", "")
    timeline.timeline([a, b], tmp_path / "t.png")
    rows = [dict(name=n, kind="function", metric="host", ratio=1.01, ci_low=1.0, ci_high=1.02, a=1.0, b=1.01,
                 verdict="inconclusive") for n in names.values()]
    charts.deltas(rows, tmp_path / "d.png")
    assert len(style.short("k" * 20_000)) == style.MAX_LABEL


def test_run_report_gives_the_injected_delay_asked_and_measured(tmp_path):
    """A calibrated slowdown: the report says what was asked (the percentage of the token measured
    before the run, in µs) and what the delay took where it ran (the CPU backend: a host busy wait)."""
    from conftest import small_spec

    from perfreview.analysis import summary
    from perfreview.flows import measure
    from runner import config as cfg

    res = measure.measure(small_spec(timing="functions"), [cfg.resolve("baseline", {"inject_slowdown_pct": "20"})],
                          tmp_path)
    run = runs.read_run(res[0].path)
    got = summary.injected_delay(run)
    assert got.slowdown_pct == 20 and got.asked_us == pytest.approx(got.token_us * 0.2, rel=0.01)
    assert got.on_host and got.measured_us >= got.asked_us  # a busy wait lasts at least what it was asked
    md = review.run_markdown(run)
    assert "### Injected delay" in md and f"{got.asked_us:.1f} µs a token (20% of the" in md
    plain = runs.read_run(measure.measure(small_spec(), [cfg.resolve("baseline")], tmp_path)[0].path)
    assert summary.injected_delay(plain) is None and "### Injected delay" not in review.run_markdown(plain)


def test_a_failed_write_names_the_file_asked_for_and_leaves_nothing(tmp_path):
    """render.write goes through a temporary file; when the write fails, the error names the target
    (what the user typed), not the temporary file, and no temporary file is left."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "r.md"  # its folder is a file
    with pytest.raises(OSError) as info:
        render.write(target, "text")
    assert info.value.filename == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("name, span", [("runs/a_b.json", "`runs/a_b.json`"), ("x`y", "``x`y``"),
                                        ("`edge", "`` `edge ``"), ("a<b>|c$", "`a<b>|c$`")])
def test_code_spans_keep_names_as_written(name, span):
    # inside a code span markdown's backslash escapes show as backslashes: the name goes in as it is, fenced by
    # more backticks than it holds
    assert render.code(name) == span
    inline = MarkdownIt().parseInline(f"from {render.code(name)} on")[0].children
    assert [t.content for t in inline if t.type == "code_inline"] == [name]
