"""Writing a file whole or not at all: every report, picture and export goes through here."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def written_whole(path: Path, mode: str = "w") -> Iterator[IO]:
    """A temporary file beside ``path``, renamed onto it when the block ends without error, so a kill
    or a failure never leaves ``path`` half-written. On failure the temporary file is removed and an
    OSError names ``path`` (what the user asked for), not the temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, mode) as fh:
            yield fh
        tmp.replace(path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
