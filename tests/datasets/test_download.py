"""The shared helpers: downloads, zip-or-folder trees, fingerprints, list options."""

from __future__ import annotations

import os
import zipfile

import pytest

from protobench.datasets._download import DownloadError, FileTree, as_list, download, fingerprint


def test_download_copies_a_url_atomically(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"omniglot" * 1000)
    dest = download(src.as_uri(), tmp_path / "sub" / "out.bin", timeout=5)
    assert dest.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.bin"]


def test_failed_download_raises_short_reason_and_leaves_no_part_file(tmp_path):
    with pytest.raises(DownloadError, match="missing.zip") as err:
        download((tmp_path / "missing.zip").as_uri(), tmp_path / "out.zip", timeout=5)
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())
    with pytest.raises(DownloadError):
        download("not-a-url", tmp_path / "out.zip")


def test_zip_and_folder_trees_list_and_read_the_same_files(tmp_path):
    folder = tmp_path / "top"
    (folder / "a" / "b").mkdir(parents=True)
    (folder / "a" / "b" / "x.txt").write_text("x")
    (folder / "y.txt").write_text("y")
    with zipfile.ZipFile(tmp_path / "top.zip", "w") as z:
        z.writestr("top/", "")
        z.writestr("top/a/b/x.txt", "x")
        z.writestr("top/y.txt", "y")
    with FileTree(tmp_path / "top.zip", "top") as zt, FileTree(folder) as ft:
        assert zt.names() == ft.names() == ["a/b/x.txt", "y.txt"]
        for name in ft.names():
            with zt.open(name) as a, ft.open(name) as b:
                assert a.read() == b.read()


def test_fingerprint_tracks_names_sizes_mtimes_and_extras(tmp_path):
    f = tmp_path / "f.zip"
    f.write_bytes(b"1234")
    base = fingerprint([f], 28)
    assert fingerprint([f], 28) == base and fingerprint([f], 32) != base
    os.utime(f, ns=(1, 1))
    touched = fingerprint([f], 28)
    assert touched != base
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "img.png").write_bytes(b"x")
    before = fingerprint([tmp_path / "d"])
    (tmp_path / "d" / "img2.png").write_bytes(b"y")
    assert fingerprint([tmp_path / "d"]) != before


def test_as_list():
    assert as_list("Korean, Tagalog,,Sanskrit ") == ["Korean", "Tagalog", "Sanskrit"]
    assert as_list(["a", " b"]) == ["a", "b"]
    assert as_list(None) == as_list("") == []
