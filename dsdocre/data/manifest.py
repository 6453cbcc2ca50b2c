"""The shard manifest: what a shard folder holds, and the check that it is intact.

``manifest.json`` is written last (atomically), so a folder with a manifest is a finished job.
Later stages call :func:`verify` (or :func:`shard_paths`) before reading: a shard that is
missing, truncated or altered raises :class:`ShardVerificationError` naming the shard.
The formats are described in ``docs/shards.md``; the same manifest layout serves the document
shards, the fact-join output and the denoiser's scored shards.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

FORMAT = "dsdocre-shards"
FORMAT_VERSION = 2  # 2: enc.json holds mention end positions (blanking without re-tokenizing)
MANIFEST = "manifest.json"
REJECTED = "rejected.jsonl"


class ShardVerificationError(RuntimeError):
    """A shard (or the manifest) does not match what the manifest promises."""


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def tmp_path(path: str | Path) -> Path:
    """Where a file is written before it is renamed into place (per process: never shared)."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def write_json_atomic(path: str | Path, obj, indent: int | None = 1) -> None:
    """Write to a temporary name, then rename: readers see the old file or the new one, never half."""
    path = Path(path)
    tmp = tmp_path(path)
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(directory: str | Path, expected_format: str = FORMAT, expected_version: int = FORMAT_VERSION) -> dict:
    """The manifest of a finished job; a clear error when there is none or it is another format."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise ShardVerificationError(f"{path}: no manifest: the job that writes {directory} did not finish "
                                     "(re-run it: finished shards are kept)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ShardVerificationError(f"{path}: manifest is not valid JSON: {err}") from None
    if manifest.get("format") != expected_format:
        raise ShardVerificationError(f"{path}: format {manifest.get('format')!r}, expected {expected_format!r}")
    if manifest.get("format_version") != expected_version:
        raise ShardVerificationError(f"{path}: format version {manifest.get('format_version')}, this code "
                                     f"reads version {expected_version}: re-run the command that wrote it")
    return manifest


def check_file(directory: str | Path, entry: dict) -> str | None:
    """Why the file of one manifest entry ({name, bytes, sha256}) is not intact; None when it is."""
    path = Path(directory) / entry["name"]
    if not path.exists():
        return "missing"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"size {size} bytes, manifest says {entry['bytes']} (truncated or rewritten)"
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        return f"sha256 {digest[:16]}..., manifest says {entry['sha256'][:16]}... (corrupted)"
    return None


def verify(directory: str | Path, expected_format: str = FORMAT, expected_fingerprint: str | None = None,
           expected_version: int = FORMAT_VERSION) -> dict:
    """Re-hash every shard listed in the manifest; return the manifest or raise naming the bad shards."""
    directory = Path(directory)
    manifest = load(directory, expected_format, expected_version)
    if expected_fingerprint is not None and manifest.get("tokenizer_fingerprint") != expected_fingerprint:
        raise ShardVerificationError(
            f"{directory}: shards were tokenized with tokenizer {manifest.get('tokenizer_fingerprint')}, "
            f"this model uses {expected_fingerprint}: re-shard with the model's encoder")
    files = manifest["shards"] + manifest.get("fact_index", [])  # fact-join output lists its index too
    bad = [(e["name"], why) for e in files if (why := check_file(directory, e))]
    if bad:
        listing = "; ".join(f"{name}: {why}" for name, why in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ShardVerificationError(
            f"{directory}: {len(bad)} of {len(files)} files fail verification: {listing}{more}. "
            "Re-run the command that wrote them: intact shards are kept, the others are redone.")
    return manifest


def shard_paths(directory: str | Path, verify_checksums: bool = True, expected_format: str = FORMAT) -> list[str]:
    """The shard files in order, for ``webdataset.WebDataset(paths)``; verified unless told not to."""
    manifest = (verify if verify_checksums else load)(directory, expected_format)
    return [str(Path(directory) / e["name"]) for e in manifest["shards"]]
