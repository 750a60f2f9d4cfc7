"""
Presets: named defaults for a route, so that a common setup is one short
stanza (C{preset = "syncthing-discovery"}) instead of keys that must all be
right together.

A preset fills in only what the route does not say itself; a key the route
writes always wins, inside tables too (C{tls.client_certificate}).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._errors import ConfigError

PRESETS: Mapping[str, Mapping[str, Any]] = {
    # Syncthing's discovery server run as `stdiscosrv -http` (Debian 1.19;
    # `--http` in newer releases) on its default port, on loopback: demux
    # ends TLS, asks every device for its (self-signed) certificate without
    # verifying it, and forwards plain HTTP naming the client.
    "syncthing-discovery": {
        "tls": {"client_certificate": "request"},
        "backend": "http://127.0.0.1:8443",
    },
}
"""The presets, by name: each the route keys it fills in."""

_TARGET_KEYS = ("backend", "local", "routes")


def withPreset(route: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """
    The route with its preset's defaults filled in, or as it is without one.

    @raise ConfigError: for an unknown preset, naming C{where}.
    """
    if "preset" not in route:
        return route
    name = route["preset"]
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(
            f"unknown preset {name!r} (known presets: {', '.join(sorted(PRESETS))})",
            f"{where}: preset",
        )
    merged = dict(route)
    for key, value in PRESETS[name].items():
        if key in _TARGET_KEYS and any(k in route for k in _TARGET_KEYS):
            # The route names its own target: the preset's is not wanted.
            continue
        if key not in merged:
            merged[key] = value
        elif isinstance(value, Mapping) and isinstance(merged[key], Mapping):
            merged[key] = {**value, **merged[key]}
    return merged
