"""Shared fixtures: the real Fashion-MNIST data, loaded once per test session."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # import softmax_fashion from the checkout, wherever pytest starts

import softmax_fashion as sf  # noqa: E402

DATA_DIR = REPO / "data"
SCRIPT = REPO / "softmax_fashion.py"


def dataset_available():
    """True when the tutorial can load Fashion-MNIST without the network."""
    raw_dir = DATA_DIR / "FashionMNIST" / "raw"
    return (all((raw_dir / name).exists() for name in sf.RAW_FILES)
            or all((sf.DEBIAN_DIR / f"{name}.gz").exists() for name in sf.RAW_FILES))


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
