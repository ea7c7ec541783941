"""fsspec storage options for stores on object storage (s3://, gs://, az://, ...).

Credentials and endpoints come first from the usual environment variables, which s3fs and
botocore read themselves (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_PROFILE, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL), so the same command works on every
machine of a cluster. `--storage-option KEY=VALUE` adds fsspec options on top; this module
turns those strings into what the filesystem expects:

    fsspec_options("s3://bucket/cache.zarr",
                   {"endpoint_url": "http://10.0.0.5:9000", "anon": "false",
                    "config_kwargs.max_pool_connections": "32"})
    == {"client_kwargs": {"endpoint_url": "http://10.0.0.5:9000"}, "anon": False,
        "config_kwargs": {"max_pool_connections": 32}}

- A dotted key `a.b=v` sets the nested option {"a": {"b": v}} (s3fs client_kwargs,
  config_kwargs, s3_additional_kwargs).
- For s3:// and s3a://, `endpoint_url` and `region_name` go into `client_kwargs` (where
  every s3fs version passes them on to the botocore client: MinIO, Ceph, R2, ...).
- String values `true` / `false` become booleans and integers become ints, except for
  credential-like keys (key, secret, token, password, ...), which always stay strings.
- Non-string values (options passed from Python) are used as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from logit_store.errors import UserError

S3_PROTOCOLS = ("s3", "s3a")
S3_CLIENT_KEYS = ("endpoint_url", "region_name")
SECRET_WORDS = ("key", "secret", "token", "password", "credential", "sas", "user")
INTEGER = re.compile(r"[-+]?\d+")


def protocol(url: str) -> str | None:
    """'s3' for 's3://bucket/x.zarr'; None for a local path."""
    head, sep, _ = url.partition("://")
    return head.split("::")[-1].lower() if sep else None


def typed_value(key: str, value: Any) -> Any:
    """A `--storage-option` string as fsspec expects it: bool, int, or the string itself."""
    if not isinstance(value, str) or any(word in key.lower() for word in SECRET_WORDS):
        return value
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if INTEGER.fullmatch(value):
        return int(value)
    return value


def fsspec_options(url: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Nested, typed fsspec options for `url` (see the module docstring); {} for none."""
    scheme = protocol(url)
    nested: dict[str, Any] = {}
    for key, raw in (options or {}).items():
        path = key.split(".")
        if any(not part for part in path):
            raise UserError(f"--storage-option {key}={raw}: empty part in the key {key!r}")
        if scheme in S3_PROTOCOLS and path[0] in S3_CLIENT_KEYS:
            path = ["client_kwargs", *path]
        node = nested
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--storage-option {key}: {part!r} is already set to a value")
            node = child
        leaf = path[-1]
        if leaf in node:
            raise UserError(f"--storage-option {key}: given twice (as {'.'.join(path)})")
        node[leaf] = typed_value(leaf, raw)
    return nested
