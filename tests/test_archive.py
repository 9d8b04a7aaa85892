"""A zip of the user's images unpacked into the data root: the good layouts, and every hostile archive refused with
nothing left behind."""

import io
import stat
import zipfile

import numpy as np
import pytest
from PIL import Image

from core import archive, catalog
from core.archive import unpack_dataset
from core.catalog import DatasetError

pytestmark = pytest.mark.usefixtures("registry_restored")  # each test's registrations are undone


@pytest.fixture(autouse=True)
def _restored(registry_restored):
    yield


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def make_zip(path, files: dict[str, bytes], links=()):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return path


def classes(prefix="", n=10, names=("a", "b")):
    return {f"{prefix}{c}/{i}.png": png(k * 100 + i) for k, c in enumerate(names) for i in range(n)}


def leftovers(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_a_zip_of_one_folder_is_unpacked_under_its_folders_name(tmp_path):
    z = make_zip(tmp_path / "upload.zip", {**classes("xrays/"), "__MACOSX/xrays/._a": b"x", "xrays/.DS_Store": b"x"})
    info = unpack_dataset(z, "upload.zip", tmp_path / "root")
    assert info.name == "xrays" and info.classes == ("a", "b") and "xrays" in catalog.DATASETS
    assert len(list((tmp_path / "root" / "xrays" / "a").iterdir())) == 10
    assert leftovers(tmp_path / "root") == ["xrays"]  # no staging folder left


def test_a_zip_of_class_folders_is_named_after_the_file(tmp_path):
    info = unpack_dataset(make_zip(tmp_path / "my_set.zip", classes()), "my_set.zip", tmp_path / "root")
    assert info.name == "my_set" and (tmp_path / "root" / "my_set" / "b" / "3.png").is_file()


def test_an_uploaded_file_object_works_and_its_size_is_checked_first(tmp_path, monkeypatch):
    data = make_zip(tmp_path / "s.zip", classes("s/")).read_bytes()
    assert unpack_dataset(io.BytesIO(data), "s.zip", tmp_path / "root", size=len(data)).name == "s"
    monkeypatch.setattr(archive, "MAX_ARCHIVE_BYTES", len(data) - 1)
    with pytest.raises(DatasetError, match="at most"):
        unpack_dataset(io.BytesIO(data), "t.zip", tmp_path / "root2", size=len(data))
    assert not (tmp_path / "root2").exists()


@pytest.mark.parametrize("files, links, says", [
    ({**classes("d/"), "d/../../evil.png": png(1)}, (), "points outside"),
    ({**classes("d/"), "/etc/evil.png": png(1)}, (), "points outside"),
    ({**classes("d/"), "C:/evil.png": png(1)}, (), "points outside"),
    ({**classes("d/"), "d\\..\\..\\evil.png": png(1)}, (), "points outside"),
    (classes("d/"), ("d/a/link.png",), "link"),
    ({**classes("d/"), "d/a/inner.zip": b"PK"}, (), "another archive"),
    ({**classes("d/"), "d/a/inner.tar.gz": b"x"}, (), "another archive"),
    ({}, (), "no files"),
    (classes("d/", names=("only",)), (), "at least 2"),
    (classes("brain_tumor/"), (), "built-in"),
    (classes("my data/"), (), "cannot name a dataset"),
])
def test_a_hostile_or_unusable_archive_is_refused_and_leaves_nothing(tmp_path, files, links, says):
    z = make_zip(tmp_path / "u.zip", files, links)
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match=says):
        unpack_dataset(z, "u.zip", root)
    assert leftovers(root) == []
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()


def test_a_zip_bomb_is_stopped_by_its_declared_size_and_by_the_bytes_it_really_writes(tmp_path, monkeypatch):
    root = tmp_path / "root"
    bomb = make_zip(tmp_path / "bomb.zip", {**classes("d/"), "d/a/zeros.png": bytes(50 * 2**20)})
    assert bomb.stat().st_size < 2**20  # 50 MiB of zeros compress to a few KiB
    monkeypatch.setattr(archive, "MAX_UNPACKED_BYTES", 10 * 2**20)
    with pytest.raises(DatasetError, match="unpacks to more than"):
        unpack_dataset(bomb, "bomb.zip", root)
    assert leftovers(root) == []
    # a header that understates the size: the bytes written are counted against it
    monkeypatch.setattr(archive, "MAX_UNPACKED_BYTES", 2**40)
    real_entries = archive._entries

    def understated(z):
        found = real_entries(z)
        for info, _ in found:
            info.file_size = min(info.file_size, 1000)
        return found
    monkeypatch.setattr(archive, "_entries", understated)
    with pytest.raises(DatasetError, match="unpacks to more than the archive says|cannot be unpacked"):
        unpack_dataset(bomb, "bomb.zip", root)
    assert leftovers(root) == []


def test_too_many_files_not_a_zip_and_a_name_already_there_are_refused(tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setattr(archive, "MAX_FILES", 15)
    with pytest.raises(DatasetError, match="more than 15 files"):
        unpack_dataset(make_zip(tmp_path / "many.zip", classes("m/")), "many.zip", root)
    (tmp_path / "fake.zip").write_bytes(b"not a zip at all")
    with pytest.raises(DatasetError, match="not a zip archive"):
        unpack_dataset(tmp_path / "fake.zip", "fake.zip", root)
    monkeypatch.setattr(archive, "MAX_FILES", 20_000)
    unpack_dataset(make_zip(tmp_path / "one.zip", classes("same/")), "one.zip", root)
    with pytest.raises(DatasetError, match="in the data root already"):
        unpack_dataset(make_zip(tmp_path / "two.zip", classes("same/", n=11)), "two.zip", root)
    assert len(list((root / "same" / "a").iterdir())) == 10  # the first one, untouched


def test_a_corrupt_member_is_refused_and_leaves_nothing(tmp_path):
    z = make_zip(tmp_path / "c.zip", classes("c/"))
    data = bytearray(z.read_bytes())
    at = data.find(b"IDAT")  # flip bytes inside the first image's compressed data: its CRC no longer matches
    data[at + 20:at + 40] = bytes(20)
    (tmp_path / "c2.zip").write_bytes(bytes(data))
    with pytest.raises(DatasetError):
        unpack_dataset(tmp_path / "c2.zip", "c2.zip", tmp_path / "root")
    assert leftovers(tmp_path / "root") == []
