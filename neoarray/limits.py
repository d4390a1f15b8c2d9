"""Command-line flags for the ``Limits`` dataclasses of the master and storage nodes.

Each limit ``name_with_unit`` becomes ``--name-with-unit`` (its dataclass default as
the default), and is checked at startup: a limit below its minimum, or a message
size gRPC cannot use, stops the node with an error naming the flag and the value,
before anything listens.
"""
from __future__ import annotations

import argparse
import dataclasses

from .errors import NeoError
from .wire import GRPC_MESSAGE_BYTES_MAX


def add_limit_flags(parser: argparse.ArgumentParser, limits_cls, names, helps: dict | None = None) -> None:
    """Add ``--NAME`` for each field ``NAME`` of ``limits_cls`` (ints and floats)."""
    defaults = {f.name: f.default for f in dataclasses.fields(limits_cls)}
    group = parser.add_argument_group("limits", "bounds of this node; exceeding one is refused "
                                      "with a message naming the limit")
    for name in names:
        default = defaults[name]
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=type(default), default=default,
                           help=f"{(helps or {}).get(name, name.replace('_', ' '))} (default {default})")


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def check_limits(opts, names, minimums: dict | None = None) -> dict:
    """``{name: value}`` of ``names`` read from ``opts``; ``NeoError`` naming the flag
    for a value below its minimum (1 unless ``minimums`` says otherwise) or a message
    size above what gRPC accepts."""
    out = {}
    for name in names:
        value, low = getattr(opts, name), (minimums or {}).get(name, 1)
        if value < low:
            raise NeoError(f"{flag(name)} must be >= {low}, not {value}")
        if name.startswith("message_bytes") and value > GRPC_MESSAGE_BYTES_MAX:
            raise NeoError(f"{flag(name)} must be <= {GRPC_MESSAGE_BYTES_MAX} (gRPC's largest), not {value}")
        out[name] = value
    return out
