"""Section 1: the data the tutorial trains on, how it reaches the machine, and how damaged data is caught."""
import gzip
import hashlib
import shutil

import pytest
import torch
from torchvision import datasets, transforms

import softmax_fashion as sf
from conftest import leftovers, one_error_line, write_idx


def test_split_sizes_follow_dataset_order(tutorial_data, data_dir):
    (train_images, train_labels), (val_images, val_labels) = tutorial_data
    assert train_images.shape == (3500, 784) and train_labels.shape == (3500,)
    assert val_images.shape == (500, 784) and val_labels.shape == (500,)
    # In order, not shuffled: the validation split is samples 3500..3999 of the training file.
    dataset = datasets.FashionMNIST(data_dir, train=True)
    assert torch.equal(val_labels, dataset.targets[3500:4000])
    assert torch.equal(train_labels, dataset.targets[:3500])


def test_pixels_are_exactly_what_to_tensor_makes(tutorial_data, data_dir):
    (images, labels), _ = tutorial_data
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.99
    assert set(labels.unique().tolist()) == set(range(10))
    # Bit for bit what the tutorial's transforms.ToTensor() makes of the same images.
    dataset = datasets.FashionMNIST(data_dir, train=True, transform=transforms.ToTensor())
    for i in (0, 1, 1234, 3499):
        image, label = dataset[i]
        assert image.shape == (1, 28, 28)
        assert torch.equal(images[i], image.view(784)) and labels[i] == label


def test_the_test_split_is_the_official_10000(test_data):
    images, labels = test_data
    assert images.shape == (10_000, 784) and labels.shape == (10_000,)
    assert torch.bincount(labels).tolist() == [1000] * 10


def test_names_agree_with_torchvision():
    assert list(sf.CLASSES) == datasets.FashionMNIST.classes
    assert [f"{name}.gz" for name in sf.RAW_FILES] == [name for name, _ in datasets.FashionMNIST.resources]


def test_the_real_files_have_the_published_checksums(real_raw_dir):
    for name, md5 in sf.RAW_FILES.items():
        assert hashlib.md5((real_raw_dir / name).read_bytes()).hexdigest() == md5, name


# --- The offline copy ---

def test_the_offline_copy_is_decompressed_verified_and_read_by_torchvision(tiny_debian_copy, tmp_path):
    _, made = tiny_debian_copy
    data_dir = tmp_path / "data"

    images, labels = sf.load_fashion_mnist(data_dir, train=True, count=20)

    raw_dir = data_dir / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(sf.RAW_FILES)  # no .gz, no leftovers
    expected_images, expected_labels = made["train"]
    assert torch.equal(images, expected_images[:20].reshape(20, 784).float() / 255)
    assert torch.equal(labels, expected_labels[:20].long())
    test_images, _ = sf.load_fashion_mnist(data_dir, train=False)
    assert test_images.shape == (7, 784)


def test_a_copy_that_does_not_match_the_checksum_is_refused_and_not_kept(tiny_debian_copy, tmp_path, monkeypatch):
    monkeypatch.setitem(sf.RAW_FILES, "train-labels-idx1-ubyte", "0" * 32)
    with pytest.raises(sf.UserError) as error:
        sf.load_fashion_mnist(tmp_path / "data")
    message = str(error.value)
    assert "train-labels-idx1-ubyte.gz does not decompress to the original" in message
    assert "apt-get install --reinstall dataset-fashion-mnist" in message
    raw_dir = tmp_path / "data" / "FashionMNIST" / "raw"
    assert "train-labels-idx1-ubyte" not in [p.name for p in raw_dir.iterdir()]
    assert leftovers(tmp_path / "data") == []


def test_a_damaged_gz_file_is_one_line_not_a_traceback(tiny_debian_copy, tmp_path):
    folder, _ = tiny_debian_copy
    damaged = folder / "t10k-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:100])  # cut short
    with pytest.raises(sf.UserError, match="cannot decompress .*t10k-images-idx3-ubyte.gz.*--reinstall"):
        sf.load_fashion_mnist(tmp_path / "data")
    assert leftovers(tmp_path / "data") == []


def test_no_data_no_copy_no_network_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sf, "DEBIAN_DIR", tmp_path / "no-such-folder")
    # A mirror on the loopback port 9 refuses at once: the same failure as a machine offline.
    monkeypatch.setattr(datasets.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(sf.UserError) as error:
        sf.load_fashion_mnist(tmp_path / "data")
    message = str(error.value)
    assert "could not be downloaded" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "FashionMNIST/raw" in message and "\n" not in message


def test_asking_for_more_images_than_the_files_hold_is_an_error(tiny_debian_copy, tmp_path):
    with pytest.raises(sf.UserError, match="holds only 30"):
        sf.load_fashion_mnist(tmp_path / "data", count=31)


# --- Damaged files in the data folder: caught before any training ---

def copy_of_real_data(real_raw_dir, tmp_path, damaged_name):
    """A data folder whose files link to the real ones, but for a writable copy of ``damaged_name``."""
    raw_dir = tmp_path / "data" / "FashionMNIST" / "raw"
    raw_dir.mkdir(parents=True)
    for name in sf.RAW_FILES:
        if name == damaged_name:
            shutil.copyfile(real_raw_dir / name, raw_dir / name)
        else:
            (raw_dir / name).symlink_to(real_raw_dir / name)
    return raw_dir / damaged_name


@pytest.mark.parametrize("damage", ["truncated", "bad header"])
def test_a_damaged_file_is_named_with_the_fix(damage, real_raw_dir, tmp_path, capsys):
    damaged = copy_of_real_data(real_raw_dir, tmp_path, "train-labels-idx1-ubyte")
    content = damaged.read_bytes()
    damaged.write_bytes(content[:30_000] if damage == "truncated" else b"<html>" + content[6:])

    assert sf.main(["--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out")]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(damaged) in line and "delete it and run again" in line


@pytest.mark.parametrize("labels_file, position", [
    ("train-labels-idx1-ubyte", 10),     # a training image
    ("train-labels-idx1-ubyte", 3700),   # a validation image
    ("train-labels-idx1-ubyte", 59999),  # an image the tutorial does not use: the file is damaged all the same
    ("t10k-labels-idx1-ubyte", 5),       # a test image, which is used only after training
], ids=["train", "validation", "unused", "test"])
def test_a_label_out_of_range_is_caught_before_training(labels_file, position, real_raw_dir, tmp_path, capsys):
    damaged = copy_of_real_data(real_raw_dir, tmp_path, labels_file)
    content = bytearray(damaged.read_bytes())
    content[8 + position] = 12  # the labels follow an 8-byte header
    damaged.write_bytes(bytes(content))

    out_dir = tmp_path / "out"
    assert sf.main(["--data-dir", str(tmp_path / "data"), "--out-dir", str(out_dir)]) == 1
    captured = capsys.readouterr()
    line = one_error_line(captured.err)
    assert f"{damaged} is damaged: label {position} is 12" in line
    assert "numbered 0 to 9" in line and "delete it and run again" in line
    assert "Epoch" not in captured.out
    assert list(out_dir.iterdir()) == []  # not even samples.png: nothing was drawn or trained


def test_a_file_of_the_right_size_with_other_contents_is_caught_when_decompressed(tiny_debian_copy, tmp_path):
    # Random image bytes with valid labels train to 10% accuracy without an error. The size and the
    # header are right, so only the check against the original checksums catches them.
    folder, _ = tiny_debian_copy
    original = gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())
    write_idx(folder / "train-images-idx3-ubyte.gz", torch.randint(0, 256, (30, 28, 28), dtype=torch.uint8))
    assert len(gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())) == len(original)
    with pytest.raises(sf.UserError, match="train-images-idx3-ubyte.gz does not decompress to the original"):
        sf.load_fashion_mnist(tmp_path / "data")
