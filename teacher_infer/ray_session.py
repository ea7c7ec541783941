"""A Ray session for the `--engine ray` commands (precompute and sweep).

It lives in teacher_infer, which student_train's Ray sweep may import (the import graph is a
line: logit_store <- teacher_infer <- student_train). Ray is an optional extra: it is imported
only when a session is opened.

    with ray_session(address) as ray:   # join `address`, the running session, or start one
        ...                             # a UserError raised in a task comes out as itself
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from logit_store import UserError

INSTALL_HINT = "--engine ray needs Ray: pip install 'kdcache[ray]'"


def import_ray() -> ModuleType:
    """The `ray` module, or a UserError saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise UserError(INSTALL_HINT) from err
    return ray


@contextmanager
def ray_session(address: str | None) -> Iterator[ModuleType]:
    """Yield `ray`, initialised: reuse a session this process already has; otherwise join the
    cluster at `address` (``auto``: the one `ray start` runs on this machine; also read from
    RAY_ADDRESS) or, without one, start a local instance, and shut down what was started here."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started and address:
        ray.init(address=address)
    elif started:
        ray.init(include_dashboard=False)
    try:
        yield ray
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, UserError):  # one line for the user, not a remote traceback
            raise err.cause from None
        raise
    finally:
        if started:
            ray.shutdown()
