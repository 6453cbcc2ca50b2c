"""dsdocre.fsio: atomic writes (unique temporary names, fsync, rename) and a full disk named in one line."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dsdocre import fsio
from dsdocre.errors import UserError


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if fsio.TEMP_MARK in p.name or p.name.endswith(".tmp"))


# ---- the temporary name -------------------------------------------------------------------------
def test_temp_name_is_beside_the_target_and_unique_per_call(tmp_path):
    target = tmp_path / "a.json"
    names = {fsio.temp_path(target) for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert name.parent == tmp_path and name.name.startswith(f"a.json.tmp-{os.getpid()}-")


def test_temp_name_differs_between_threads(tmp_path):
    seen: list[Path] = []
    barrier = threading.Barrier(8)

    def take():
        barrier.wait()
        seen.append(fsio.temp_path(tmp_path / "x"))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 8


def test_temp_name_differs_between_processes(tmp_path):
    code = "import sys; from dsdocre import fsio; print(fsio.temp_path(sys.argv[1]))"
    names = [subprocess.run([sys.executable, "-c", code, str(tmp_path / "x")], capture_output=True, text=True,
                            check=True).stdout.strip() for _ in range(2)]
    assert names[0] != names[1]
    assert names[0].split(".tmp-")[1].split("-")[0] != names[1].split(".tmp-")[1].split("-")[0]  # the pids


def test_threads_writing_one_file_leave_one_whole_version(tmp_path):
    target = tmp_path / "shared.json"
    errors = []

    def write(i):
        try:
            for _ in range(20):
                fsio.write_json_atomic(target, {"writer": i, "pad": "x" * 10_000})
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert json.loads(target.read_text())["writer"] in range(4)
    assert leftovers(tmp_path) == []


# ---- what is written, and fsync ---------------------------------------------------------------
def test_the_variants_write_exact_bytes(tmp_path):
    fsio.write_bytes_atomic(tmp_path / "b", b"\x00\xffbytes")
    fsio.write_text_atomic(tmp_path / "t", "caf\u00e9\n")
    fsio.write_json_atomic(tmp_path / "j", {"b": [1, 2], "a": "\u00e9"})
    fsio.write_json_atomic(tmp_path / "k", {"b": 1}, indent=None, sort_keys=True)
    with fsio.atomic_open(tmp_path / "o") as f:
        f.write("line 1\n")
        f.write("line 2\n")
    with fsio.atomic_path(tmp_path / "p") as tmp:
        tmp.write_bytes(b"by path")
    assert (tmp_path / "b").read_bytes() == b"\x00\xffbytes"
    assert (tmp_path / "t").read_bytes() == "caf\u00e9\n".encode()
    assert (tmp_path / "j").read_text() == json.dumps({"b": [1, 2], "a": "\u00e9"}, indent=1) + "\n"
    assert (tmp_path / "k").read_text() == '{"b": 1}\n'
    assert (tmp_path / "o").read_text() == "line 1\nline 2\n"
    assert (tmp_path / "p").read_bytes() == b"by path"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("how", ["bytes", "text", "json", "open", "path"])
def test_the_file_and_its_directory_are_fsynced(tmp_path, monkeypatch, how):
    synced: list[str] = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        synced.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    target = tmp_path / "f"
    if how == "bytes":
        fsio.write_bytes_atomic(target, b"x")
    elif how == "text":
        fsio.write_text_atomic(target, "x")
    elif how == "json":
        fsio.write_json_atomic(target, [1])
    elif how == "open":
        with fsio.atomic_open(target, "wb") as f:
            f.write(b"x")
    else:
        with fsio.atomic_path(target) as tmp:
            with open(tmp, "wb") as f:  # a writer that neither flushes to disk nor fsyncs
                f.write(b"x")
    assert target.exists()
    assert synced.count("file") >= 1
    if os.path.isdir("/proc/self/fd"):
        assert synced[-1] == "dir"  # the rename made durable, after the data


def test_fsync_tree_syncs_every_file_and_folder(tmp_path, monkeypatch):
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("a", "d/b", "d/e/c"):
        (tmp_path / name).write_text(name)
    calls = []
    monkeypatch.setattr(fsio, "fsync_file", lambda p: calls.append(("file", Path(p).name)))
    monkeypatch.setattr(fsio, "fsync_dir", lambda p: calls.append(("dir", Path(p).name)))
    fsio.fsync_tree(tmp_path)
    assert sorted(n for k, n in calls if k == "file") == ["a", "b", "c"]
    assert [n for k, n in calls if k == "dir"] == ["e", "d", tmp_path.name]  # deepest first


# ---- a crash mid-write ------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["open", "path"])
def test_an_exception_mid_write_keeps_the_old_file_and_no_temporary(tmp_path, how):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        if how == "open":
            with fsio.atomic_open(target) as f:
                f.write("half of the new")
                raise RuntimeError("killed")
        else:
            with fsio.atomic_path(target) as tmp:
                tmp.write_text("half of the new")
                raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_a_writer_that_writes_nothing_replaces_nothing(tmp_path):
    target = tmp_path / "out"
    target.write_text("old")
    with pytest.raises(FileNotFoundError, match="did not create"):
        with fsio.atomic_path(target):
            pass
    assert target.read_text() == "old"


def test_atomic_open_refuses_append_and_read_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with fsio.atomic_open(tmp_path / "x", "a"):
            pass


# ---- a full disk ------------------------------------------------------------------------------
def enospc(code=errno.ENOSPC):
    return OSError(code, os.strerror(code))


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text
    return text


def test_disk_full_error_names_path_sizes_and_what_stands(tmp_path):
    target = tmp_path / "ckpt" / "step1"
    err = fsio.disk_full_error(target, 5_000_000, "the previous checkpoint stands", cause=enospc())
    text = one_line(err)
    assert isinstance(err, UserError)
    assert text.startswith(f"{target}: no space left on the device")
    assert re.search(r"; the write needed 5,000,000 bytes \(4\.8 MiB\), [\d,]+ bytes( \([\d.]+ \w+\))? free; "
                     r"the previous checkpoint stands\. Free some space", text), text


def test_disk_full_error_for_a_quota(tmp_path):
    text = one_line(fsio.disk_full_error(tmp_path / "x", cause=enospc(errno.EDQUOT)))
    assert "disk quota exceeded" in text and "quota allows less" in text


class FullDisk:
    """A file on a full filesystem: it opens, and every write fails with ENOSPC."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        raise enospc()

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("variant", ["bytes", "text", "json", "open"])
def test_a_full_disk_names_itself_and_leaves_the_target_and_no_temporary(tmp_path, monkeypatch, variant):
    import builtins

    target = tmp_path / "manifest.json"
    target.write_text("the old manifest")
    data = "x" * 3000
    monkeypatch.setattr(fsio, "open", lambda *a, **k: FullDisk(builtins.open(*a, **k)), raising=False)
    stands = "the previous manifest stands"
    with pytest.raises(UserError) as caught:
        if variant == "bytes":
            fsio.write_bytes_atomic(target, data.encode(), what_stands=stands)
        elif variant == "text":
            fsio.write_text_atomic(target, data, what_stands=stands)
        elif variant == "json":
            fsio.write_json_atomic(target, data, indent=None, what_stands=stands)
        else:
            with fsio.atomic_open(target, what_stands=stands) as f:
                f.write(data)
    text = one_line(caught.value)
    assert text.startswith(f"{target}: no space left on the device; ")
    needed = {"bytes": "the write needed 3,000 bytes (2.9 KiB)", "text": "the write needed 3,000 bytes (2.9 KiB)",
              "json": f"the write needed {len(json.dumps(data)) + 1:,} bytes (2.9 KiB)",
              "open": "it ran out after writing 0 bytes (the size needed is not known)"}[variant]
    assert re.search(re.escape(needed) + r", [\d,]+ bytes( \([\d.]+ \w+\))? free; " + stands, text), text
    assert target.read_text() == "the old manifest"
    assert leftovers(tmp_path) == []
    assert isinstance(caught.value.__cause__, OSError) and caught.value.__cause__.errno == errno.ENOSPC


def test_a_full_disk_in_a_streaming_writer_reports_what_it_had_written(tmp_path):
    """A tar writer or torch.save runs out mid-file: the message says how far it got."""
    target = tmp_path / "shard-000001.tar"
    with pytest.raises(UserError) as caught:
        with fsio.atomic_path(target, what_stands="the shards finished so far stand") as tmp:
            with open(tmp, "wb") as f:
                f.write(b"y" * 4096)
                f.flush()
                raise enospc()
    text = one_line(caught.value)
    assert "ran out after writing 4,096 bytes (4.0 KiB)" in text and "the shards finished so far stand" in text
    assert not target.exists() and leftovers(tmp_path) == []


def test_explain_disk_full_passes_other_errors_and_recognizes_torch(tmp_path):
    with pytest.raises(PermissionError):
        with fsio.explain_disk_full(tmp_path / "x"):
            raise PermissionError(errno.EACCES, "denied")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "weights").write_bytes(b"z" * 10)
    with pytest.raises(UserError, match="no space left"):
        with fsio.explain_disk_full(tmp_path / "ckpt", what_stands="the previous checkpoint stands", cleanup=partial):
            raise RuntimeError("[enforce fail at inline_container.cc:1] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed (No space left on device)")
    assert not partial.exists()
    # torch's words without the errno's: a full disk only when the filesystem is (nearly) full
    torch_error = RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    assert not fsio.is_disk_full(torch_error, tmp_path) or fsio.free_bytes(tmp_path) < (1 << 20)
    assert not fsio.is_disk_full(UserError("no space left on the device"))


def test_a_full_disk_during_a_folder_save_keeps_the_old_folder(tmp_path):
    from dsdocre.savedir import verify_folder, write_atomically

    folder = tmp_path / "encoder"
    write_atomically(lambda tmp: (tmp / "w").write_bytes(b"old"), folder)

    def fill(tmp: Path):
        (tmp / "w").write_bytes(b"new, half")
        raise enospc()

    with pytest.raises(UserError) as caught:
        write_atomically(fill, folder, what_stands="the previous export stands")
    text = one_line(caught.value)
    assert text.startswith(f"{folder}: no space left") and "the previous export stands" in text
    assert (folder / "w").read_bytes() == b"old" and verify_folder(folder) == []
    assert leftovers(tmp_path) == []


# ---- folders ------------------------------------------------------------------------------------
def test_folder_save_uses_a_private_temporary_and_clears_a_killed_one(tmp_path):
    from dsdocre.savedir import verify_folder, write_atomically

    folder = tmp_path / "model"
    killed = tmp_path / "model.tmp-99999-deadbeef"
    killed.mkdir()
    (tmp_path / "model.tmp").mkdir()  # the name older versions used
    seen = []
    write_atomically(lambda tmp: seen.append(tmp) or (tmp / "a").write_text("1"), folder, step=3)
    assert seen[0].name.startswith(f"model.tmp-{os.getpid()}-")
    assert verify_folder(folder) == [] and json.loads((folder / "dsdocre_checksums.json").read_text())["step"] == 3
    assert leftovers(tmp_path) == []
    write_atomically(lambda tmp: (tmp / "a").write_text("2"), folder)
    assert (folder / "a").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_an_exception_in_a_folder_save_removes_its_temporary(tmp_path):
    from dsdocre.savedir import write_atomically

    def broken(tmp: Path):
        (tmp / "a").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomically(broken, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_writing_a_submission_keeps_the_previous_one(tmp_path, monkeypatch):
    import builtins

    from dsdocre.inference import write_submission

    path = tmp_path / "result.json"
    write_submission([{"title": "a", "h_idx": 0, "t_idx": 1, "r": "P17"}], path)
    before = path.read_bytes()
    monkeypatch.setattr(fsio, "open", lambda *a, **k: FullDisk(builtins.open(*a, **k)), raising=False)
    with pytest.raises(UserError) as caught:
        write_submission([{"title": "b", "h_idx": 1, "t_idx": 0, "r": "P27"}], path)
    text = one_line(caught.value)
    assert text.startswith(f"{path}: no space left on the device; the write needed 52 bytes,")
    assert "the submission file there before, if any, stands" in text
    assert path.read_bytes() == before and leftovers(tmp_path) == []
