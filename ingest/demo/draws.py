"""Deterministic draws: random streams keyed by slot and tag, stable digests, ids and names."""

from __future__ import annotations

import hashlib
import uuid
import zlib

import numpy as np

#: Random-stream tags: each kind of fact draws from its own `default_rng([seed, slot, tag])`.
T_NODES, T_FLAP, T_HOT, T_SAMPLES, T_STEP, T_CRASH = 1, 2, 3, 4, 5, 6
T_WARN, T_FIND, T_INCIDENT, T_COST, T_GAP, T_PVC, T_ADHOC = 7, 8, 9, 10, 11, 12, 13
T_CONTAINER, T_SUBNET = 14, 15


def keyed_rng(*key: int) -> np.random.Generator:
    """A random stream keyed by (seed, slot, tag, ...): independent of anything drawn before."""
    return np.random.default_rng(list(key))


def stable_hex(*parts: object) -> str:
    """A stable 32-hex-digit digest of the parts."""
    return hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=16).hexdigest()


def stable_unit(*parts: object) -> float:
    """A stable number in [0, 1) derived from the parts."""
    return int(stable_hex(*parts)[:13], 16) / 16**13


def stable_uuid(*parts: object) -> str:
    """A stable version-4-shaped UUID derived from the parts."""
    return str(uuid.UUID(bytes=bytes.fromhex(stable_hex(*parts)), version=4))


def text_tag(text: str) -> int:
    """A stable small integer for a text tag (random-stream keys must be integers)."""
    return zlib.crc32(text.encode())


def k8s_suffix(length: int, *parts: object) -> str:
    """A name suffix in the alphabet Kubernetes uses for generated names."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    n = int(stable_hex(*parts), 16)
    out = []
    for _ in range(length):
        n, r = divmod(n, len(alphabet))
        out.append(alphabet[r])
    return "".join(out)
