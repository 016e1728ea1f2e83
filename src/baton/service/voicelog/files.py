"""The recordings' files: SHA-256 digests, verification, and the export archive.

A digest is taken when the recording is closed and stored with it; playback and export read
the file again and compare, so a file changed (or truncated) on disk since is *reported* — an
alarm and a refusal — never served as if it were the original. Digests are computed in chunks
with a yield to the loop between them: an hour of 8 kHz audio is 57 MB, and the media clock
runs on the same loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CHUNK", "Digest", "digest", "inside", "is_wav", "write_archive"]

#: Bytes hashed between two yields to the loop.
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Digest:
    sha256: str
    size: int


async def digest(path: Path) -> Digest:
    """The file's SHA-256 and size. Raises ``OSError`` if it cannot be read."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
            await asyncio.sleep(0)
    return Digest(h.hexdigest(), size)


def is_wav(path: Path) -> bool:
    """Does the file start like a WAV (RIFF … WAVE)? ``False`` if unreadable."""
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return len(head) == 12 and head[:4] == b"RIFF" and head[8:] == b"WAVE"


def inside(path: Path, folder: Path) -> Path | None:
    """The file, if it exists inside ``folder`` (nothing is ever served from elsewhere)."""
    try:
        resolved = path.resolve()
    except OSError:
        return None
    if not resolved.is_relative_to(folder) or not resolved.is_file():
        return None
    return resolved


def write_archive(manifest: dict[str, Any], files: Iterable[tuple[str, Path]]) -> bytes:
    """A zip of ``manifest.json`` and each ``(name in the archive, file)``. WAV compresses
    poorly and is stored as is."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        for name, path in files:
            z.write(path, name)
    return out.getvalue()
