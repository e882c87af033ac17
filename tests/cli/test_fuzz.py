"""A seeded corpus of broken inputs through the CLI, per format: every case either works (exit 0) or
fails with one line ``perfreview: error: <file>: <problem>`` (exit 2), never a traceback, and a
failure leaves no run behind. Mutations: truncation, wrong types, missing keys, huge and non-finite
numbers, deep nesting, gzip garbage, empty files; for SQLite, missing columns and text in number
columns; for run folders, every run.json key given the wrong type."""

from __future__ import annotations

import copy
import gzip
import json
import random
import sqlite3
from pathlib import Path

import pytest

from perfreview.cli import main

VALUES = [None, True, -1, 0, 1e400, -1e308, float("nan"), "abc", "", [], {}, [1, "x"], {"a": 1}, 2**70, "1e400"]


def mutate_json(doc, rng: random.Random):
    """One random structural mutation of a JSON document (a copy)."""
    doc = copy.deepcopy(doc)
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + [k])
        elif isinstance(node, list):
            for i, v in enumerate(node[:6]):
                walk(v, path + [i])

    walk(doc, [])
    path = rng.choice(paths[1:] or [[]])
    if not path:
        return rng.choice(VALUES)
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    action = rng.random()
    if action < 0.6:
        parent[path[-1]] = rng.choice(VALUES)
    elif action < 0.8 and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = [[[[[[[[[[1]]]]]]]]]] if rng.random() < 0.5 else {"x": parent[path[-1]]}
    return doc


def raw_variants(text: bytes, rng: random.Random) -> bytes:
    choice = rng.randrange(6)
    if choice == 0:
        return text[: rng.randrange(max(1, len(text)))]
    if choice == 1:
        return b""
    if choice == 2:
        return b"\x1f\x8b" + bytes(rng.randrange(256) for _ in range(64))
    if choice == 3:
        return gzip.compress(text[: len(text) // 2])
    if choice == 4:
        return b"[" * rng.randrange(1000, 200_000)
    return bytes(rng.randrange(256) for _ in range(200))


def one_line_or_ok(code: int, err: str, path: Path) -> None:
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("perfreview: error: "), err
        assert str(path) in lines[0] or path.name in lines[0], err


def kineto_doc() -> dict:
    ev = []
    for t in range(4):
        b = 100 + 1000 * t
        ev += [{"ph": "X", "cat": "user_annotation", "name": "token", "pid": 1, "tid": 1, "ts": b, "dur": 900},
               {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": b + 20,
                "dur": 10, "args": {"correlation": t}},
               {"ph": "X", "cat": "kernel", "name": "k<$_0>", "pid": 0, "tid": 7, "ts": b + 50, "dur": 400,
                "args": {"stream": 7, "device": 0, "correlation": t}},
               {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD (Pageable -> Device)", "pid": 0, "tid": 7,
                "ts": b + 460, "dur": 20, "args": {"stream": 7, "bytes": 64}}]
    return {"deviceProperties": [{"name": "H100"}], "traceEvents": ev}


@pytest.mark.parametrize("seed", range(8))
def test_kineto_corpus(tmp_path, capsys, seed):
    rng = random.Random(seed)
    good = json.dumps(kineto_doc()).encode()
    for i in range(40):
        path = tmp_path / f"k{i}.json"
        if i % 4 == 3:
            path.write_bytes(raw_variants(good, rng))
        else:
            path.write_text(json.dumps(mutate_json(kineto_doc(), rng), allow_nan=True))
        out = tmp_path / "runs"
        code = main(["import", "kineto", str(path), "--token-marker", "token", "--out", str(out)])
        one_line_or_ok(code, capsys.readouterr().err, path)
        if code == 2:
            assert not (out / path.stem).exists()


def llama_doc() -> list:
    return [{"build_commit": "abc", "model_type": "llama 8B", "n_prompt": 0, "n_gen": 32, "n_depth": 0,
             "avg_ts": 100.0, "samples_ts": [100.0 + i * 0.1 for i in range(10)], "samples_ns": [1] * 10}]


@pytest.mark.parametrize("seed", range(6))
def test_llama_bench_corpus(tmp_path, capsys, seed):
    rng = random.Random(100 + seed)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(llama_doc()))
    for i in range(40):
        path = tmp_path / f"b{i}.jsonl"
        if i % 4 == 3:
            path.write_bytes(raw_variants(json.dumps(llama_doc()).encode(), rng))
        else:
            path.write_text(json.dumps(mutate_json(llama_doc(), rng), allow_nan=True))
        code = main(["compare-llama-bench", str(good), str(path), "--json"])
        err = capsys.readouterr().err
        assert code in (0, 2), err
        if code == 2:
            obj = json.loads(err)  # under --json the error is a JSON object
            assert path.name in obj["error"] and obj["exit"] == 2
        # importing it: a stored run, or one line and nothing stored
        runs = tmp_path / "runs"
        stored = main(["import", "llama-bench", str(path), "--out", str(runs), "--quiet"])
        one_line_or_ok(stored, capsys.readouterr().err, path)
        assert (runs / path.stem).is_dir() == (stored == 0)


@pytest.mark.parametrize("seed", range(4))
def test_nsys_corpus(tmp_path, capsys, seed):
    from nsys_fixture import make

    rng = random.Random(200 + seed)
    for i in range(25):
        path = make(tmp_path / f"n{i}.sqlite", "sas", tokens=3)
        con = sqlite3.connect(path)
        table = rng.choice(["CUPTI_ACTIVITY_KIND_RUNTIME", "CUPTI_ACTIVITY_KIND_KERNEL", "CUPTI_ACTIVITY_KIND_MEMCPY",
                            "NVTX_EVENTS", "StringIds"])
        action = rng.randrange(4)
        if action == 0:
            con.execute(f"DROP TABLE {table}")
        elif action == 1:
            cols = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
            dropped = rng.choice(cols)
            keep = [c for c in cols if c != dropped]
            con.execute(f"CREATE TABLE t AS SELECT {', '.join(f'[{c}]' for c in keep)} FROM {table}")
            con.execute(f"DROP TABLE {table}")
            con.execute(f"ALTER TABLE t RENAME TO {table}")
        elif action == 2:
            col = rng.choice([r[1] for r in con.execute(f"PRAGMA table_info({table})") if r[5] == 0])  # not the key
            value = rng.choice(["abc", 1e300, None, -5])
            con.execute(f"UPDATE OR IGNORE {table} SET [{col}] = ? WHERE rowid % 2 = 0", (value,))
        else:
            con.commit()
            con.close()
            path.write_bytes(path.read_bytes()[: rng.randrange(100, 4000)])
            con = None
        if con is not None:
            con.commit()
            con.close()
        out = tmp_path / "runs"
        code = main(["import", "nsys", str(path), "--token-marker", "llama_decode", "--out", str(out)])
        one_line_or_ok(code, capsys.readouterr().err, path)


@pytest.fixture(scope="module")
def good_runs(tmp_path_factory):
    from synthetic import make_pair

    root = tmp_path_factory.mktemp("good")
    return make_pair(root, repeats=4, tokens=4)


@pytest.mark.parametrize("seed", range(4))
def test_run_folder_corpus(tmp_path, capsys, good_runs, seed):
    import shutil

    rng = random.Random(300 + seed)
    a, b = good_runs
    for i in range(15):
        broken = tmp_path / f"r{i}"
        shutil.copytree(a, broken)
        meta = json.loads((broken / "run.json").read_text())
        if i % 5 == 4:
            (broken / "events.parquet").write_bytes(raw_variants(b"PAR1" * 100, rng))
        else:
            (broken / "run.json").write_text(json.dumps(mutate_json(meta, rng), allow_nan=True))
        for argv in (["report", str(broken), "--out", str(tmp_path / f"o{i}.md")],
                     ["compare", str(broken), str(b), "--out", str(tmp_path / f"c{i}.md")],
                     ["plot", "timeline", str(broken), "--out", str(tmp_path / f"t{i}.png")],
                     ["export", "perfetto", str(broken), "--out", str(tmp_path / f"e{i}.json")]):
            code = main(argv)
            err = capsys.readouterr().err
            one_line_or_ok(code, err, broken)
            if code == 2:  # nothing half-written: not the output, nor a picture or JSON beside it
                out = Path(argv[argv.index("--out") + 1])
                assert not list(out.parent.glob(out.stem + "*"))


LLAMA_TEXT = {  # the same result as llama-bench writes it in its text formats
    "csv": '"build_commit","model_type","n_prompt","n_gen","n_depth","avg_ts","stddev_ts"\n'
           '"abc","llama 8B","0","32","0","100.450000","0.302765"\n',
    "sql": "CREATE TABLE IF NOT EXISTS llama_bench (\n  build_commit TEXT,\n  model_type TEXT,\n  n_prompt INTEGER,\n"
           "  n_gen INTEGER,\n  n_depth INTEGER,\n  avg_ts REAL,\n  stddev_ts REAL\n);\n"
           "INSERT INTO llama_bench (build_commit, model_type, n_prompt, n_gen, n_depth, avg_ts, stddev_ts) "
           "VALUES ('abc', 'llama 8B', '0', '32', '0', '100.450000', '0.302765');\n",
    "md": "| model | size | params | backend | ngl | test | t/s |\n| --- | ---: | ---: | --- | --: | ---: | ---: |\n"
          "| llama 8B | 5.21 GiB | 8.03 B | CUDA | 99 | tg32 | 100.45 ± 0.30 |\n\nbuild: abc (1)\n",
}


@pytest.mark.parametrize("fmt", sorted(LLAMA_TEXT))
def test_llama_bench_text_format_corpus(tmp_path, capsys, fmt):
    """Truncated, spliced and byte-flipped CSV, SQL and markdown: a comparison or one line."""
    rng = random.Random(fmt)
    good = tmp_path / f"good.{fmt}"
    good.write_text(LLAMA_TEXT[fmt])
    other = tmp_path / f"other.{fmt}"
    other.write_text(LLAMA_TEXT[fmt])
    assert main(["compare-llama-bench", str(good), str(other)]) == 0
    assert main(["compare-llama-bench", str(good), str(good)]) == 2  # a result compared with itself
    assert "compared with itself" in capsys.readouterr().err
    capsys.readouterr()
    text = LLAMA_TEXT[fmt].encode()
    for i in range(60):
        path = tmp_path / f"b{i}.{fmt}"
        cut = rng.randrange(len(text))
        data = [text[:cut], text[:cut] + text[rng.randrange(len(text)):], raw_variants(text, rng),
                bytes(b if rng.random() > 0.03 else rng.randrange(256) for b in text)][i % 4]
        path.write_bytes(data)
        code = main(["compare-llama-bench", str(good), str(path)])
        one_line_or_ok(code, capsys.readouterr().err, path)
