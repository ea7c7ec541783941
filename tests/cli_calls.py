"""`kdcache ARGS` through the real entry point (`cli.main`), for the shipping tests."""

from __future__ import annotations

import sys

import pytest

import cli


def kdcache(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, args: list[str]
) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `kdcache ARGS`."""
    monkeypatch.setattr(sys, "argv", ["kdcache", *args])
    try:
        cli.main()
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
