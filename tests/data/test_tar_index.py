"""dsdocre.data.tar_index: the member index written beside a tar finds every sample, by ordinal
and by key, with a bounded number of files open; a tar or index that disagree is named."""

import io
import tarfile

import numpy as np
import pytest

from dsdocre.data.manifest import ShardVerificationError
from dsdocre.data.tar_index import IndexedTar, TarPool, build_index, index_path, write_index


def _tar(path, samples, long_names=False):
    import webdataset as wds

    with open(path, "wb") as f, wds.TarWriter(f, encoder=False, mtime=0, user="dsdocre", group="dsdocre") as sink:
        for key, members in samples:
            sink.write({"__key__": key, **members})
    return path


def _samples(n, key_width=8):
    return [(f"{i:0{key_width}d}", {"json": f'{{"i": {i}}}'.encode() * (i % 7 + 1), "enc.json": bytes([i % 251]) * i})
            for i in range(n)]


def test_every_sample_by_ordinal_and_by_key_equals_a_full_read(tmp_path):
    samples = _samples(40)
    path = _tar(tmp_path / "shard-00000.tar", samples)
    entry = write_index(path)
    assert entry["name"] == "shard-00000.tar.idx" and entry["samples"] == 40
    tar = IndexedTar(path)
    with tarfile.open(path) as tf:  # what a plain scan of the tar reads
        whole = {m.name: tf.extractfile(m).read() for m in tf}
    for i, (key, members) in enumerate(samples):
        by_ordinal, by_key = tar.read(i), tar.read_key(key)
        assert by_ordinal == by_key == {"__key__": key, **{s: whole[f"{key}.{s}"] for s in members}}
    with pytest.raises(KeyError):
        tar.ordinal("00000040")
    tar.close()


def test_long_member_names_are_read_too(tmp_path):
    """Names over tar's 100 characters (GNU long-name headers) still index and read back."""
    samples = [(f"{'k' * 120}{i:03d}", {"pair.json": b"x" * i}) for i in range(1, 5)]
    path = _tar(tmp_path / "pairs-000000.tar", samples)
    write_index(path)
    tar = IndexedTar(path)
    assert [tar.read(i)["pair.json"] for i in range(4)] == [b"x" * i for i in range(1, 5)]


def test_unsorted_keys_are_refused_at_write_time(tmp_path):
    path = _tar(tmp_path / "t.tar", [("b", {"json": b"1"}), ("a", {"json": b"2"})])
    with pytest.raises(ValueError, match="ascending key order"):
        build_index(path)


def test_a_missing_or_stale_index_is_named(tmp_path):
    path = _tar(tmp_path / "shard-00000.tar", _samples(5))
    with pytest.raises(ShardVerificationError, match="index shard-00000.tar.idx is missing"):
        IndexedTar(path)
    write_index(path)
    _tar(path, _samples(5, key_width=12))  # the tar rewritten after its index: members moved
    with pytest.raises(ShardVerificationError, match="not where its index says"):
        IndexedTar(path).read(3)
    np.save(io.BytesIO(), np.zeros(1))
    index_path(path).write_bytes(b"not numpy")
    with pytest.raises(ShardVerificationError, match="not an index of this format"):
        IndexedTar(path)


def test_the_pool_keeps_at_most_max_open_files(tmp_path):
    import os

    paths = []
    for s in range(6):
        paths.append(_tar(tmp_path / f"shard-{s:05d}.tar", _samples(3)))
        write_index(paths[-1])
    pool = TarPool(max_open=2)
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        for path in paths:
            assert pool.get(path).read(2)["__key__"] == "00000002"
            assert pool.open_count <= 2
    assert len(os.listdir("/proc/self/fd")) - fds_before <= 2 * 2  # per open shard: the tar and its index
    pool.close()
    assert pool.open_count == 0 and len(os.listdir("/proc/self/fd")) == fds_before


def test_shards_of_an_older_format_name_the_command_that_rebuilds_them(tmp_path):
    import json

    from dsdocre.data import manifest as mf

    for fmt, command in (("dsdocre-shards", "dsdocre shard"), ("dsdocre-pairs", "dsdocre fact-join"),
                         ("dsdocre-scored", "dsdocre denoise score")):
        folder = tmp_path / fmt
        folder.mkdir()
        (folder / mf.MANIFEST).write_text(json.dumps({"format": fmt, "format_version": 1, "shards": []}))
        with pytest.raises(ShardVerificationError, match=f"rebuild the folder with `{command}`"):
            mf.load(folder, fmt, expected_version=99)


def test_a_verification_is_trusted_until_a_file_changes(tmp_path):
    """Rank 0's stamp: a restart of the run skips the hashing while every file keeps its size and
    modification time, and hashes again once one was rewritten."""
    import os

    from dsdocre.data.pretrain_data import record_verified, verified_before
    from dsdocre.fsio import sha256_file
    import json

    folder = tmp_path / "shards"
    folder.mkdir()
    tar = _tar(folder / "shard-00000.tar", _samples(4))
    index = write_index(tar)
    entry = {"name": tar.name, "docs": 4, "bytes": tar.stat().st_size, "sha256": sha256_file(tar), "index": index}
    (folder / "manifest.json").write_text(json.dumps({"format": "dsdocre-shards", "shards": [entry]}))
    stamp = tmp_path / "run" / "verified.json"
    stamp.parent.mkdir()
    assert not verified_before(stamp, [folder])
    record_verified(stamp, [folder])
    assert verified_before(stamp, [folder])
    os.utime(tar, ns=(0, tar.stat().st_mtime_ns + 1))  # rewritten in place, same size
    assert not verified_before(stamp, [folder])


def test_the_hashing_is_dealt_over_the_ranks_without_overlap_or_gap(tmp_path):
    """Every listed file (shards and their indexes, over several folders) goes to exactly one rank,
    the same deal whichever rank computes it, and no rank gets much more than its share of bytes;
    a flipped byte is found by the rank it was dealt to."""
    import json

    from dsdocre.data.pretrain_data import hash_problems, hash_share
    from dsdocre.fsio import sha256_file

    folders = []
    for f, sizes in (("a", (3, 9, 4, 7)), ("b", (5, 5, 12))):
        folder = tmp_path / f
        folder.mkdir()
        entries = []
        for i, n in enumerate(sizes):
            tar = _tar(folder / f"shard-{i:05d}.tar", _samples(n))
            entries.append({"name": tar.name, "docs": n, "bytes": tar.stat().st_size, "sha256": sha256_file(tar),
                            "index": write_index(tar)})
        (folder / "manifest.json").write_text(json.dumps({"format": "dsdocre-shards", "shards": entries}))
        folders.append(folder)
    everything = sorted((str(fo), e["name"]) for fo, e in hash_share(folders, 0, 1))
    assert len(everything) == 14  # 7 tars and their 7 indexes
    for world in (2, 3, 5):
        shares = [hash_share(folders, r, world) for r in range(world)]
        dealt = sorted((str(fo), e["name"]) for share in shares for fo, e in share)
        assert dealt == everything  # each file once
        loads = [sum(e["bytes"] for _, e in share) for share in shares]
        biggest = max(e["bytes"] for _, e in hash_share(folders, 0, 1))
        assert max(loads) - min(loads) <= biggest  # greedy by size: within one file of even
    assert all(hash_problems(hash_share(folders, r, 3)) == [] for r in range(3))
    target = tmp_path / "b" / "shard-00002.tar"
    data = bytearray(target.read_bytes())
    data[600] ^= 1
    target.write_bytes(bytes(data))
    found = [hash_problems(hash_share(folders, r, 3)) for r in range(3)]
    assert sorted(len(p) for p in found) == [0, 0, 1]
    assert "shard-00002.tar: sha256" in next(p for p in found if p)[0]
