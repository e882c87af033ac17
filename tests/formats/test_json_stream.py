"""The streaming reader: whatever the chunk boundaries, the items and the rest of the document are
what ``json.loads`` makes of the whole file; broken documents are one error each."""

from __future__ import annotations

import io
import json
import random

import pytest

from perfreview.formats import json_stream


def streamed(raw: bytes, chunk: int) -> tuple[list, object]:
    doc = json_stream.Document()
    items = []
    for batch in json_stream.stream_items(io.BytesIO(raw), doc, chunk=chunk):
        items += json.loads(json_stream.wrap(batch))
    rest = json.loads(bytes(doc.outside)) if doc.outside.strip() else None
    return items, rest


def tricky_events(n: int, rng: random.Random) -> list:
    names = ['a "quoted" [x]', "back\\slash\\", "{brace}", "\\\"", "tab\t]}", "ünï ☃", "", "]" * 3]
    return [{"ph": "X", "name": rng.choice(names) + str(i), "ts": i * 1.5, "dur": 1,
             "args": {"nested": [[{"k": rng.choice(names)}]], "stream": 7}} for i in range(n)]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_any_chunking_gives_what_json_loads_gives(chunk):
    rng = random.Random(chunk)
    doc = {"deviceProperties": [{"name": "[not the events]"}], "traceEvents": tricky_events(40, rng),
           "otherData": {"traceEvents": "a string, not the list"}}
    raw = json.dumps(doc, indent=rng.choice([None, 1])).encode()
    items, rest = streamed(raw, chunk)
    assert items == doc["traceEvents"]
    assert rest == {**doc, "traceEvents": []}


@pytest.mark.parametrize("chunk", [1, 5, 1 << 20])
def test_a_bare_array_and_a_key_after_others(chunk):
    ev = tricky_events(10, random.Random(0))
    items, rest = streamed(json.dumps(ev).encode(), chunk)
    assert items == ev and rest == []
    raw = b'{"a": [1, [2]], "b": {"traceEvents": [9]}, "traceEvents"  :\n [' + json.dumps(ev)[1:-1].encode() + b"]}"
    items, rest = streamed(raw, chunk)
    assert items == ev and rest == {"a": [1, [2]], "b": {"traceEvents": [9]}, "traceEvents": []}


@pytest.mark.parametrize("raw, problem", [
    (b'{"traceEvents": [{"ph": "X"}', "ends early"),
    (b'{"traceEvents": [{"name": "unterminated]}', "ends early"),
    (b"[" * 5000, "nested too deeply"),
    (b"]", "closes nothing"),
    (b"hello", "starts with neither"),
])
def test_broken_documents(raw, problem):
    with pytest.raises(json_stream.StreamError, match=problem):
        streamed(raw, 3)


def test_the_decompressed_size_is_capped():
    with pytest.raises(json_stream.StreamError, match="decompresses to more than"):
        list(json_stream.stream_items(io.BytesIO(b" " * 4096), json_stream.Document(), chunk=1024,
                                      max_bytes=2048))
