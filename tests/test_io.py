import pytest

from oaml.io import atomic_write, atomic_write_text


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "old")

    def explode(fh):
        fh.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, explode)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_files_get_ordinary_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "shared.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o644


def test_atomic_writes_reach_the_disk_before_and_after_the_rename(tmp_path, monkeypatch):
    """The file is synced before it replaces the old one, its folder after (the rename)."""
    import os

    from oaml.io import atomic_copy

    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_write_text(tmp_path / "a.json", "{}")
    assert synced[0].startswith(str(tmp_path / ".a.json.")) and synced[1] == str(tmp_path)
    synced.clear()
    atomic_write(tmp_path / "b.png", lambda fh: fh.write(b"x"), fsync=False)
    assert synced == []
    atomic_copy(tmp_path / "a.json", tmp_path / "copy" / "a.json")
    assert synced == [str(tmp_path / "copy" / ".a.json.tmp"), str(tmp_path / "copy")]
