import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from torchvision import transforms

from laion_assets.images.image_reader import TarImages, decode_sample, image_loader
from laion_assets_tests.img2dataset_tars import NOT_AN_IMAGE, image_bytes, sample, write_tar

PREPROCESS = transforms.Compose([transforms.Resize((16, 16)), transforms.ToTensor()])


@pytest.fixture
def tars(tmp_path: Path) -> list[Path]:
    first = write_tar(
        tmp_path / "00000.tar",
        [
            sample(0, image_bytes(0)),
            sample(1, NOT_AN_IMAGE),
            sample(2, image_bytes(2, "PNG"), ext="png"),
            sample(3, None),
        ],
    )
    second = write_tar(tmp_path / "00001.tar", [sample(10 + i, image_bytes(10 + i)) for i in range(5)])
    return [first, second]


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_yields_every_decodable_image_and_counts_the_rest(tars: list[Path], workers: int) -> None:
    keys, skipped, shapes = [], [], set()
    for batch in image_loader(tars, PREPROCESS, batch_size=3, num_workers=workers):
        skipped.extend(batch.skipped)
        if batch.images is not None:
            assert batch.images.shape[0] == len(batch.keys) == len(batch.metas)
            shapes.add(tuple(batch.images.shape[1:]))
            keys.extend(batch.keys)
            assert [m["laion_row"] for m in batch.metas] == [int(k) for k in batch.keys]
    assert sorted(int(k) for k in keys) == [0, 2, 10, 11, 12, 13, 14]
    assert shapes == {(3, 16, 16)}
    reasons = dict(skipped)
    assert set(reasons) == {"000000001", "000000003"}
    assert reasons["000000001"].startswith("UnidentifiedImageError")
    assert reasons["000000003"] == "no image in the sample"


def test_decoded_pixels_match_the_file() -> None:
    data = image_bytes(5, "PNG")
    decoded = decode_sample("k", {"png": data, "txt": b"hello"}, transforms.ToTensor())
    assert decoded.error is None and decoded.meta == {"key": "k", "caption": "hello"}
    assert decoded.image.shape == (3, 30, 40)
    assert torch.all((decoded.image >= 0) & (decoded.image <= 1))


def test_a_truncated_tar_keeps_what_was_read(tars: list[Path]) -> None:
    data = tars[1].read_bytes()
    tars[1].write_bytes(data[: len(data) // 2])
    keys, skipped = [], []
    for batch in image_loader([tars[1]], PREPROCESS, batch_size=8, num_workers=0):
        keys.extend(batch.keys)
        skipped.extend(batch.skipped)
    assert 0 < len(keys) < 5
    assert any("unreadable tar" in reason for _, reason in skipped)


def test_samples_come_in_tar_order_with_their_own_json(tars: list[Path]) -> None:
    # image_embeddings pairs each image with its JSON's laion_row: order and pairing must follow the tar.
    samples = list(TarImages(tars, PREPROCESS))
    assert [s.key for s in samples] == [f"{row:09d}" for row in (0, 1, 2, 3, 10, 11, 12, 13, 14)]
    assert [s.meta["laion_row"] for s in samples] == [0, 1, 2, 3, 10, 11, 12, 13, 14]
    assert [s.meta["caption"] for s in samples][:2] == ["caption 0", "caption 1"]


def test_folders_and_upper_case_extensions_as_before(tmp_path: Path) -> None:
    # The key is the file name up to its first dot (no folder), the extension is lower-cased.
    path = tmp_path / "odd.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("shard/000000007.JPG", image_bytes(7)), ("shard/000000007.json", b'{"laion_row": 7}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (only,) = list(TarImages([path], PREPROCESS))
    assert only.key == "000000007" and only.error is None and only.meta == {"laion_row": 7, "key": "000000007"}


def test_a_truncated_tar_is_reported_by_name(tars: list[Path]) -> None:
    data = tars[1].read_bytes()
    tars[1].write_bytes(data[: len(data) // 2])
    errors = [(s.key, s.error) for s in TarImages(tars, PREPROCESS) if s.error and "tar" in s.error]
    assert errors == [("00001.tar:rest", f"unreadable tar {tars[1]}: ReadError: unexpected end of data")]


def test_a_missing_tar_or_a_repeated_member_is_reported_by_name(tmp_path: Path) -> None:
    missing = tmp_path / "00009.tar"
    (gone,) = list(TarImages([missing], PREPROCESS))
    assert gone.error == f"unreadable tar {missing}: FileNotFoundError: No such file or directory"
    twice = write_tar(tmp_path / "00002.tar", [sample(0, image_bytes(0))])
    with tarfile.open(twice, "a") as tar:  # the same KEY.jpg again, right after the first sample
        data = image_bytes(1)
        info = tarfile.TarInfo("000000000.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    samples = list(TarImages([twice], PREPROCESS))
    assert [s.key for s in samples] == ["00002.tar:rest"]
    assert samples[0].error.startswith(f"unreadable tar {twice}: ValueError: 000000000.jpg: duplicate file name")


def test_loading_the_reader_does_not_import_webdataset() -> None:
    # The definitions import this module; webdataset loads only when a tar is read.
    code = "import sys, laion_assets.images.image_reader; assert 'webdataset' not in sys.modules, 'imported at load'"
    subprocess.run([sys.executable, "-c", code], check=True)
