"""Fixtures shared by the tests: the real Fashion-MNIST data, a trained model, and a tiny stand-in dataset."""
import gzip
import hashlib
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # import the checkout's softmax_fashion, wherever pytest starts

import softmax_fashion as sf  # noqa: E402


def pytest_configure(config):
    torch.set_num_threads(1)  # as main() runs: faster for this small model
    # Warnings are errors here, and deprecations too where the tutorial or its tests call a deprecated API. A
    # library's deprecation of what it calls of its own dependencies (old matplotlib's pyparsing names) is not.
    for line in ("error", "default::DeprecationWarning", "error::DeprecationWarning:(softmax_fashion|conftest|test_)"):
        config.addinivalue_line("filterwarnings", line)


FIGURES = ["accuracy.png", "confusion.png", "loss.png", "predictions.png", "samples.png", "weights.png"]
OUTPUTS = sorted(FIGURES + ["metrics.json", "model.pt"])


@pytest.fixture(scope="session")
def data_dir():
    """The repository's data/ folder, with the four original files (decompressed from Debian's copy if need be)."""
    sf.prepare_data(sf.DATA_DIR)
    return sf.DATA_DIR


@pytest.fixture(scope="session")
def tutorial_data(data_dir):
    """The tutorial's split: ((3,500 images, labels), (500 images, labels))."""
    return sf.train_val_split(*sf.load_fashion_mnist(data_dir, count=4000))


@pytest.fixture(scope="session")
def test_data(data_dir):
    return sf.load_fashion_mnist(data_dir, train=False)


@pytest.fixture(scope="session")
def trained_model(tutorial_data):
    """A model trained for 10 epochs with the tutorial's settings (77.0% validation accuracy)."""
    torch.manual_seed(0)
    model = sf.SoftmaxClassifier()
    sf.fit(model, *tutorial_data, epochs=10, log_every=100)
    return model.eval()


def one_error_line(err):
    """The line that says what went wrong; fails on a traceback or on more than argparse's usage line."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 or (len(lines) == 2 and lines[0].startswith("usage:")), err
    return lines[-1]


def files(folder):
    """The names of the files in ``folder``, but a run's lock file (which may stay)."""
    return sorted(path.name for path in Path(folder).iterdir() if path.name != sf.LOCK_FILE)


def leftovers(folder):
    """Temporary files that a write left behind under ``folder``."""
    return [path for path in Path(folder).rglob("*.partial")]


@pytest.fixture
def tiny_debian_copy(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST (30 training and 7 test images, with their checksums) in place of Debian's copy:
    (its folder, {split: (images, labels)})."""
    folder = tmp_path / "debian"
    folder.mkdir()
    generator = torch.Generator().manual_seed(1)
    made, checksums = {}, {}
    for split, n in (("train", 30), ("t10k", 7)):
        images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{split}-{kind}-ubyte"
            # An IDX file: two zero bytes, 0x08 for unsigned bytes, the number of dimensions, their sizes, the data.
            raw = bytes([0, 0, 8, array.dim()]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
            raw += array.numpy().tobytes()
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            checksums[name] = hashlib.md5(raw).hexdigest()
        made[split] = images, labels
    monkeypatch.setattr(sf, "DEBIAN_DIR", folder)
    monkeypatch.setattr(sf, "RAW_FILES", checksums)
    return folder, made
