"""Section 1: the data the tutorial trains on, and the ways it gets onto the machine."""
import gzip

import pytest
import torch
from torchvision import datasets, transforms

import softmax_fashion as sf


def test_split_sizes_follow_dataset_order(tutorial_data, data_dir):
    (train_images, train_labels), (val_images, val_labels) = tutorial_data
    assert train_images.shape == (3500, 784) and train_labels.shape == (3500,)
    assert val_images.shape == (500, 784) and val_labels.shape == (500,)
    # In order, not shuffled: the validation split is samples 3500..3999 of the training file.
    dataset = datasets.FashionMNIST(data_dir, train=True)
    assert torch.equal(val_labels, dataset.targets[3500:4000])
    assert torch.equal(train_labels, dataset.targets[:3500])


def test_samples_are_to_tensor_pixels_and_int64_labels(tutorial_data, data_dir):
    (images, labels), _ = tutorial_data
    assert images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.99
    assert labels.dtype == torch.int64
    assert set(labels.unique().tolist()) == set(range(10))
    # Bit for bit what the tutorial's transforms.ToTensor() makes of the same images.
    dataset = datasets.FashionMNIST(data_dir, train=True, transform=transforms.ToTensor())
    for i in (0, 1, 1234, 3499):
        image, label = dataset[i]
        assert image.shape == (1, 28, 28)
        assert torch.equal(images[i], image.view(784)) and labels[i] == label


def test_test_split_is_the_official_10000(test_data):
    images, labels = test_data
    assert images.shape == (10_000, 784) and labels.shape == (10_000,)


def test_names_agree_with_torchvision():
    assert list(sf.CLASSES) == datasets.FashionMNIST.classes
    assert [f"{name}.gz" for name in sf.RAW_FILES] == [name for name, _ in datasets.FashionMNIST.resources]


def write_idx(path, array):
    """Write a uint8 tensor as a gzipped IDX file, as the dataset's authors publish it."""
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.numpy().tobytes())


def make_debian_copy(folder, n_train=30, n_test=7):
    """A tiny Fashion-MNIST standing in for /usr/share/datasets/fashion-mnist."""
    folder.mkdir()
    generator = torch.Generator().manual_seed(1)
    made = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
        made[split] = images, labels
    return made


def test_offline_copy_is_decompressed_and_read_by_torchvision(tmp_path):
    made = make_debian_copy(tmp_path / "debian")
    data_dir = tmp_path / "data"

    images, labels = sf.load_fashion_mnist(data_dir, train=True, count=20, debian_dir=tmp_path / "debian")

    raw_dir = data_dir / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(sf.RAW_FILES)  # no .gz, no leftovers
    expected_images, expected_labels = made["train"]
    assert torch.equal(images, expected_images[:20].reshape(20, 784).float() / 255)
    assert torch.equal(labels, expected_labels[:20].long())
    test_images, _ = sf.load_fashion_mnist(data_dir, train=False, debian_dir=tmp_path / "debian")
    assert test_images.shape == (7, 784)


def test_no_data_no_copy_no_network_says_how_to_get_it(tmp_path, monkeypatch):
    # A mirror on the loopback port 9 refuses at once: the same failure as a machine offline.
    monkeypatch.setattr(datasets.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])
    with pytest.raises(sf.UserError) as error:
        sf.load_fashion_mnist(tmp_path / "data", debian_dir=tmp_path / "no-such-folder")
    message = str(error.value)
    assert "could not be downloaded" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "FashionMNIST/raw" in message and "\n" not in message


def test_asking_for_more_images_than_the_files_hold_is_an_error(tmp_path):
    make_debian_copy(tmp_path / "debian")
    with pytest.raises(sf.UserError, match="holds only 30"):
        sf.load_fashion_mnist(tmp_path / "data", count=31, debian_dir=tmp_path / "debian")
