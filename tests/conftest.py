"""Shared fixtures and helpers: the real Fashion-MNIST data, a trained model, the script as a user runs it."""
import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # import softmax_fashion from the checkout, wherever pytest starts

import softmax_fashion as sf  # noqa: E402

DATA_DIR = REPO / "data"
SCRIPT = REPO / "softmax_fashion.py"
FIGURES = ["accuracy.png", "confusion.png", "loss.png", "predictions.png", "samples.png", "weights.png"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def pytest_configure(config):
    # torchvision 0.29 deprecates its image decoding in favour of TorchCodec, once per call; the README
    # says so, and hundreds of copies of that one warning would hide any other.
    config.addinivalue_line("filterwarnings", "ignore:The image decoding and encoding capabilities of "
                                              "TorchVision are deprecated:DeprecationWarning")


def offline_copy_installed():
    """True when Debian's dataset-fashion-mnist package is installed."""
    return all((sf.DEBIAN_DIR / f"{name}.gz").exists() for name in sf.RAW_FILES)


def dataset_available():
    """True when the tutorial can load Fashion-MNIST without the network."""
    raw_dir = DATA_DIR / "FashionMNIST" / "raw"
    return all((raw_dir / name).exists() for name in sf.RAW_FILES) or offline_copy_installed()


@pytest.fixture(scope="session")
def data_dir():
    """The repository's data/ folder, holding (or able to get offline) the real dataset.

    Without it the tests that need it skip, except under CI, where they fail:
    CI installs the dataset, so its absence there is a broken install.
    """
    if not dataset_available():
        reason = ("Fashion-MNIST is neither in data/FashionMNIST/raw/ nor installed by "
                  "'apt-get install dataset-fashion-mnist'")
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{reason}, and CI must test on the real data")
        pytest.skip(reason)
    return DATA_DIR


@pytest.fixture(scope="session")
def tutorial_data(data_dir):
    """The tutorial's 3500/500 split: ((train_images, train_labels), (val_images, val_labels))."""
    images, labels = sf.load_fashion_mnist(data_dir, train=True, count=4000)
    return sf.split(images, labels, val_size=500)


@pytest.fixture(scope="session")
def test_data(data_dir):
    return sf.load_fashion_mnist(data_dir, train=False)


@pytest.fixture(scope="session")
def trained_model(tutorial_data):
    """A model trained for 20 epochs with the tutorial's settings (about 82% validation accuracy)."""
    torch.manual_seed(0)
    model = sf.SoftmaxClassifier()
    sf.fit(model, *tutorial_data, epochs=20, log_every=100)
    return model


@pytest.fixture(scope="session")
def real_raw_dir(data_dir):
    """data/FashionMNIST/raw with the four files in it (decompressed from the offline copy if need be)."""
    sf.load_fashion_mnist(data_dir, train=False)
    return data_dir / "FashionMNIST" / "raw"


# --- The script as a user runs it ---

DISPLAY_VARIABLES = ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")


def headless_env():
    """This process's environment without a display, as on a CI runner."""
    return {k: v for k, v in os.environ.items() if k not in DISPLAY_VARIABLES}


def run_script(*args, script=SCRIPT, **popen_args):
    """Run the script as a user would, in a fresh Python process without a display."""
    return subprocess.run([sys.executable, str(script), *map(str, args)], env=headless_env(),
                          capture_output=True, text=True, timeout=600, **popen_args)


def one_error_line(stderr):
    """The only line of ``stderr``; fails on a traceback or on more lines."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    return lines[0]


def leftovers(folder):
    """Temporary files that a write left behind anywhere under ``folder``."""
    return [p for p in Path(folder).rglob("*") if p.name.endswith(".partial")]


# --- A tiny Fashion-MNIST, for the offline copy and the data checks ---

def write_idx(path, array):
    """Write a uint8 tensor as a gzipped IDX file, as the dataset's authors publish it."""
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.numpy().tobytes())


@pytest.fixture
def tiny_debian_copy(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST standing in for Debian's /usr/share/datasets/fashion-mnist.

    30 training and 7 test images; the test labels are 0 to 6, so classes 7
    to 9 have no test images. The script's checksums are those of these files.
    Returns (folder, {split: (images, labels)}).
    """
    folder = tmp_path / "debian"
    folder.mkdir()
    generator = torch.Generator().manual_seed(1)
    made, checksums = {}, {}
    for split, n in (("train", 30), ("t10k", 7)):
        images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{split}-{kind}-ubyte"
            write_idx(folder / f"{name}.gz", array)
            checksums[name] = hashlib.md5(gzip.decompress((folder / f"{name}.gz").read_bytes())).hexdigest()
        made[split] = images, labels
    monkeypatch.setattr(sf, "DEBIAN_DIR", folder)
    monkeypatch.setattr(sf, "RAW_FILES", checksums)
    return folder, made
