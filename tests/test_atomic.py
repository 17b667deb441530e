"""The one atomic-write helper: all-or-nothing, umask-respecting, clear errors, stale temporaries."""
import os
import subprocess
import sys

import pytest

from metakd.atomic import atomic_path, atomic_write, remove_stale_temps, temp_path_for, write_json
from metakd.errors import MetakdError


def test_writes_and_replaces(tmp_path):
    p = tmp_path / "a" / "f.json"
    write_json(p, {"x": 1})
    assert p.read_text() == '{\n  "x": 1\n}'
    atomic_write(p, b"new")
    assert p.read_bytes() == b"new"
    assert sorted(os.listdir(p.parent)) == ["f.json"]


def test_interrupted_write_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write(p, b"old")

    def boom(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(p, boom)
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_permissions_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "f", "x")
        with atomic_path(tmp_path / "g") as tmp:
            tmp.write_bytes(b"y")  # a writer that reopens the temporary keeps its mode
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == mode
    assert (tmp_path / "g").stat().st_mode & 0o777 == mode


def test_errors_name_the_path_and_reason(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MetakdError, match=r"cannot write the checkpoint '.*file/sub/last.pt'"):
        atomic_write(blocker / "sub" / "last.pt", b"x", what="checkpoint")
    with pytest.raises(MetakdError, match="longer than the file system allows"):
        atomic_write(tmp_path / ("n" * 300), b"x")
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(MetakdError, match="permission denied"):
                atomic_write(ro / "f", b"x")
        finally:
            ro.chmod(0o700)


def test_stale_temps_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    mine = temp_path_for(tmp_path / "last.pt")
    mine.write_bytes(b"in progress")
    stale = mine.with_name(mine.name.replace(f".{os.getpid()}-", f".{dead_pid}-"))
    stale.write_bytes(b"half")
    other_host = tmp_path / "last.pt.metakd.otherhost.1-0123abcd.tmp"
    other_host.write_bytes(b"maybe alive elsewhere")
    keep = tmp_path / "notes.txt"
    keep.write_text("user file")
    assert remove_stale_temps(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other_host.name, "notes.txt"])
    assert remove_stale_temps(tmp_path / "missing") == []


def test_a_users_old_tmp_files_are_never_removed(tmp_path):
    """Only temporaries carrying metakd's tag are removed: a user's 5-day-old partial download, a
    mkstemp-like name, a ``*.tmp.png`` or a name that merely looks like host.pid stay (issue 21)."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = temp_path_for(tmp_path / "x").name.split(".")[3]
    names = ["download.iso.tmp", "best.pt.abcd1234.tmp", "plot.tmp.png", f"data.{host}.{dead_pid}-0123abcd.tmp"]
    for name in names:
        (tmp_path / name).write_bytes(b"user data")
        os.utime(tmp_path / name, (0, 0))  # 1970: far older than any age rule
    assert remove_stale_temps(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert temp_path_for(tmp_path / "x").name.startswith("x.metakd.")
