"""Output files written whole or not at all: `write_json_atomic`, for every command's JSON."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any, *, ensure_ascii: bool = True) -> None:
    """Write `data` as indented JSON (UTF-8) to a temporary file beside `path` and rename it over
    `path`: never a half-written file. The text is made before any file is opened (a value JSON
    or UTF-8 cannot hold leaves no file), and a failed write removes its temporary file."""
    text = (json.dumps(data, indent=2, ensure_ascii=ensure_ascii) + "\n").encode("utf-8")
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
