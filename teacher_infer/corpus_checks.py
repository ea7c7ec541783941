"""What a corpus file must be before it is indexed: a regular file (or folder), in UTF-8.

Refused (`CorpusError`, one line naming the file and what to do): a FIFO, device or socket, a
broken symbolic link, and UTF-16/32 text, by its byte-order mark or, without one, by the regular
NUL-byte pattern of mostly-ASCII text in it (NUL bytes are valid UTF-8 and would become text).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from teacher_infer.corpus_records import CorpusError

_BOMS = (  # (mark, encoding); longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "UTF-32LE"),
    (b"\x00\x00\xfe\xff", "UTF-32BE"),
    (b"\xff\xfe", "UTF-16LE"),
    (b"\xfe\xff", "UTF-16BE"),
)


def check_regular(path: Path) -> os.stat_result:
    try:
        st = path.stat()
    except OSError as error:  # a broken symbolic link in a folder, a vanished file
        link = " (a symbolic link to a missing file?)" if path.is_symlink() else ""
        raise CorpusError(
            f"{path}: cannot be read ({error.strerror}){link}; fix or remove it"
        ) from error
    if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
        return st
    what = (
        "a FIFO (named pipe)"
        if stat.S_ISFIFO(st.st_mode)
        else "a character device"
        if stat.S_ISCHR(st.st_mode)
        else "a block device"
        if stat.S_ISBLK(st.st_mode)
        else "a socket"
        if stat.S_ISSOCK(st.st_mode)
        else "not a regular file"
    )
    raise CorpusError(
        f"{path}: is {what}, not a corpus file; corpora are read twice (index, then units): "
        "write the text to a regular file first"
    )


def check_encoding(path: Path, head: bytes) -> None:
    for bom, name in _BOMS:
        if head.startswith(bom):
            raise CorpusError(
                f"{path}: is {name} text (byte-order mark {bom.hex(' ')}); kdcache reads UTF-8: "
                f"convert it first, e.g. iconv -f {name} -t UTF-8 FILE > FILE.utf8"
            )
    if path.suffix.lower() == ".parquet" or len(head) < 8:
        return
    guess = nul_pattern(head)
    if guess is not None:  # NUL bytes are valid UTF-8: without this they would become text
        raise CorpusError(
            f"{path}: looks like {guess} text without a byte-order mark (NUL bytes in a regular "
            f"pattern); kdcache reads UTF-8: convert it first, e.g. iconv -f {guess} -t UTF-8 "
            "FILE > FILE.utf8"
        )


def nul_pattern(head: bytes) -> str | None:
    """The UTF-16/32 variant whose NUL-byte pattern `head` shows (mostly-ASCII text in it has
    NUL high bytes at fixed offsets mod 2 or 4), or None: a stray NUL in UTF-8 text is no
    pattern and is read as it is."""
    data = np.frombuffer(head[: len(head) - len(head) % 4], dtype=np.uint8).reshape(-1, 4)
    nul = (data == 0).mean(axis=0)  # share of NUL bytes at each offset mod 4
    patterns = {
        "UTF-32LE": (False, True, True, True),
        "UTF-32BE": (True, True, True, False),
        "UTF-16LE": (False, True, False, True),
        "UTF-16BE": (True, False, True, False),
    }
    for name, zero in patterns.items():
        if all((share >= 0.3) if z else (share < 0.05) for share, z in zip(nul, zero, strict=True)):
            return name
    return None
