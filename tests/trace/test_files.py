"""Files written whole or not at all (reports, pictures, exports)."""

from __future__ import annotations

import pytest

from perfreview.trace.files import written_whole


def test_a_failure_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "review.md"
    target.write_text("the old review")
    with pytest.raises(RuntimeError):
        with written_whole(target) as fh:
            fh.write("half of the new")
            raise RuntimeError("killed")
    assert target.read_text() == "the old review"
    assert [p.name for p in tmp_path.iterdir()] == ["review.md"]


def test_a_complete_write_replaces_the_file(tmp_path):
    target = tmp_path / "t.png"
    with written_whole(target, "wb") as fh:
        fh.write(b"\x89PNG")
    assert target.read_bytes() == b"\x89PNG" and [p.name for p in tmp_path.iterdir()] == ["t.png"]


def test_an_os_error_names_the_target(tmp_path):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "out.json"  # its folder is a file
    with pytest.raises(OSError) as info:
        with written_whole(target) as fh:
            fh.write("{}")
    assert info.value.filename == str(target)
