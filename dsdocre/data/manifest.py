"""The shard manifest: what a shard folder holds, and the check that it is intact.

``manifest.json`` is written last (atomically, :func:`dsdocre.fsio.write_json_atomic`), so a
folder with a manifest is a finished job. Later stages call :func:`verify` (or
:func:`shard_paths`) before reading: a shard that is missing, truncated or altered raises
:class:`ShardVerificationError` naming the shard; a manifest that is damaged itself (not JSON, a
field missing or of the wrong type, counts that do not add up) raises it naming the manifest and
the field.
The formats are described in ``docs/shards.md``; the same manifest layout serves the document
shards, the fact-join output and the denoiser's scored shards.
"""

from __future__ import annotations

import json
from pathlib import Path

from dsdocre.errors import UserError
from dsdocre.fsio import sha256_file  # noqa: F401 - part of this module's interface (mf.sha256_file)

FORMAT = "dsdocre-shards"
# 2: enc.json holds mention end positions (blanking without re-tokenizing);
# 3: every tar has its member index beside it (dsdocre.data.tar_index), listed as the shard's "index"
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
REJECTED = "rejected.jsonl"


# The command that (re)writes each format: named when a folder is of an older version.
REBUILT_BY = {FORMAT: "dsdocre shard", "dsdocre-scored": "dsdocre denoise score", "dsdocre-pairs": "dsdocre fact-join"}


class ShardVerificationError(UserError, RuntimeError):
    """A shard (or the manifest) does not match what the manifest promises.

    A :class:`UserError` (the command prints one line and exits, the fix is to re-run the stage
    that wrote the folder); still a ``RuntimeError`` for callers that catch it as one."""


# Per format: the per-shard count field, and the counts it must add up to (the total, then the
# fields whose sum the input is). Readers rely on them (the stream's sample count, the
# denoiser's accounting), so a manifest whose numbers disagree is refused, never half-trusted.
_COUNTS = {
    FORMAT: ("docs", "sharded", ("sharded", "rejected")),
    "dsdocre-scored": ("docs", "scored", ("scored", "rejected")),
    "dsdocre-pairs": ("pairs", "pairs", None),
}


def load(directory: str | Path, expected_format: str = FORMAT, expected_version: int = FORMAT_VERSION) -> dict:
    """The manifest of a finished job; a clear error when there is none or it is another format."""
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise ShardVerificationError(f"{path}: no manifest: the job that writes {directory} did not finish "
                                     "(re-run it: finished shards are kept)")
    try:
        manifest = json.loads(path.read_bytes())
    except RecursionError:
        raise ShardVerificationError(f"{path}: manifest is not valid JSON (nested too deeply)") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ShardVerificationError(f"{path}: manifest is not valid JSON: {err}") from None
    if not isinstance(manifest, dict):
        raise ShardVerificationError(f"{path}: manifest is not a JSON object")
    if manifest.get("format") != expected_format:
        raise ShardVerificationError(f"{path}: format {manifest.get('format')!r}, expected {expected_format!r}")
    if manifest.get("format_version") != expected_version:
        command = REBUILT_BY.get(expected_format, "the command that wrote it")
        raise ShardVerificationError(f"{path}: format version {manifest.get('format_version')}, this code "
                                     f"reads version {expected_version}: rebuild the folder with `{command}` "
                                     "(a new output folder, or the same one: it is rewritten)")
    _check_structure(path, manifest)
    return manifest


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _check_structure(path: Path, manifest: dict) -> None:
    """The fields readers use are there, of the right type, and the counts add up."""
    def broken(field: str, what: str) -> ShardVerificationError:
        return ShardVerificationError(f"{path}: manifest field {field}: {what} (the manifest is damaged: re-run "
                                      "the command that wrote this folder)")

    per_shard, total, parts = _COUNTS.get(manifest["format"], (None, None, None))
    for key in ("shards", "fact_index"):
        entries = manifest.get(key, [])
        if key == "shards" and key not in manifest:
            raise broken(key, "missing")
        if not isinstance(entries, list):
            raise broken(key, "expected a list of files")
        for i, e in enumerate(entries):
            if not isinstance(e, dict):
                raise broken(f"{key}[{i}]", "expected an object")
            name = e.get("name")
            if not (isinstance(name, str) and name and Path(name).name == name and name not in (".", "..")):
                raise broken(f"{key}[{i}].name", f"expected a file name, got {name!r}"[:200])
            if not _is_count(e.get("bytes")):
                raise broken(f"{key}[{i}].bytes", f"expected a size in bytes, got {e.get('bytes')!r}"[:200])
            sha = e.get("sha256")
            if not (isinstance(sha, str) and len(sha) == 64):
                raise broken(f"{key}[{i}].sha256", f"expected 64 hex digits, got {sha!r}"[:200])
            if key == "shards" and per_shard is not None and not _is_count(e.get(per_shard)):
                raise broken(f"shards[{i}].{per_shard}", f"expected a count, got {e.get(per_shard)!r}"[:200])
            if key == "shards" and per_shard is not None:  # the tar's member index (dsdocre.data.tar_index)
                index = e.get("index")
                if not (isinstance(index, dict) and isinstance(index.get("name"), str)
                        and Path(index["name"]).name == index["name"] and _is_count(index.get("bytes"))
                        and isinstance(index.get("sha256"), str) and len(index["sha256"]) == 64):
                    raise broken(f"shards[{i}].index", f"expected {{name, bytes, sha256}}, got {index!r}"[:200])
                if index.get("samples") != e[per_shard]:
                    raise broken(f"shards[{i}].index.samples",
                                 f"says {index.get('samples')!r}, the shard holds {e[per_shard]}"[:200])
    if per_shard is None:
        return
    counts = manifest.get("counts")
    if not isinstance(counts, dict):
        raise broken("counts", "missing" if counts is None else "expected an object")
    for field in {total, *(parts or ())}:
        if not _is_count(counts.get(field)):
            raise broken(f"counts.{field}", f"expected a count, got {counts.get(field)!r}"[:200])
    in_shards = sum(e[per_shard] for e in manifest["shards"])
    if counts[total] != in_shards:
        raise broken(f"counts.{total}", f"says {counts[total]}, the shards list {in_shards}")
    if parts is not None:
        if not _is_count(counts.get("input")):
            raise broken("counts.input", f"expected a count, got {counts.get('input')!r}"[:200])
        if counts["input"] != sum(counts[p] for p in parts):
            raise broken("counts.input", f"says {counts['input']}, which is not " + " + ".join(
                f"{p} {counts[p]}" for p in parts))


def check_file(directory: str | Path, entry: dict, checksum: bool = True) -> str | None:
    """Why the file of one manifest entry ({name, bytes, sha256}) is not intact; None when it is.
    ``checksum=False``: its presence and size only (a process that trusts a verification done once)."""
    path = Path(directory) / entry["name"]
    if not path.exists():
        return "missing"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"size {size} bytes, manifest says {entry['bytes']} (truncated or rewritten)"
    if not checksum:
        return None
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        return f"sha256 {digest[:16]}..., manifest says {entry['sha256'][:16]}... (corrupted)"
    return None


def files_of(manifest: dict) -> list[dict]:
    """Every file entry a manifest lists: the shards, their indexes, the fact index."""
    return (manifest["shards"] + [s["index"] for s in manifest["shards"] if "index" in s]
            + manifest.get("fact_index", []))


def verify(directory: str | Path, expected_format: str = FORMAT, expected_fingerprint: str | None = None,
           expected_version: int = FORMAT_VERSION, checksums: bool = True) -> dict:
    """Re-hash every file the manifest lists (shards and their indexes); return the manifest or raise
    naming the bad files. ``checksums=False`` checks presence and sizes only: for processes that
    trust a verification another process made (``dsdocre.data.pretrain_data``: rank 0 hashes once)."""
    directory = Path(directory)
    manifest = load(directory, expected_format, expected_version)
    if expected_fingerprint is not None and manifest.get("tokenizer_fingerprint") != expected_fingerprint:
        raise ShardVerificationError(
            f"{directory}: shards were tokenized with tokenizer {manifest.get('tokenizer_fingerprint')}, "
            f"this model uses {expected_fingerprint}: re-shard with the model's encoder")
    files = files_of(manifest)
    bad = [f"{e['name']}: {why}" for e in files if (why := check_file(directory, e, checksums))]
    if bad:
        raise verification_failure(f"{directory}: {len(bad)} of {len(files)}", bad)
    return manifest


def verification_failure(what: str, bad: list[str]) -> ShardVerificationError:
    """The error for files that fail verification: ``what`` ("DIR: 3 of 40") and the first five
    'file: why' of ``bad``."""
    more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
    return ShardVerificationError(f"{what} files fail verification: {'; '.join(bad[:5])}{more}. Re-run the command "
                                  "that wrote them: intact shards are kept, the others are redone.")


def shard_paths(directory: str | Path, verify_checksums: bool = True, expected_format: str = FORMAT) -> list[str]:
    """The shard files in order, for ``webdataset.WebDataset(paths)``; verified unless told not to."""
    manifest = (verify if verify_checksums else load)(directory, expected_format)
    return [str(Path(directory) / e["name"]) for e in manifest["shards"]]
