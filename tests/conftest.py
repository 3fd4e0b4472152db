"""Fixtures: the real Fashion-MNIST data, a trained model, and a tiny stand-in for Debian's copy of the data."""
import gzip
import hashlib
import signal
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's softmax_fashion, wherever pytest starts
import softmax_fashion as sf  # noqa: E402


def pytest_configure():
    torch.set_num_threads(1)  # as main() trains


@pytest.fixture(scope="session")
def data_dir():
    sf.prepare_data(REPO / "data")  # from Debian's copy, or downloaded
    return REPO / "data"


@pytest.fixture(scope="session")
def tutorial_data(data_dir):
    return sf.train_val_split(*sf.load_fashion_mnist(data_dir, count=4000))


@pytest.fixture(scope="session")
def test_data(data_dir):
    return sf.load_fashion_mnist(data_dir, train=False)


def train(data, epochs, batches=None, seed=0):  # seeded and fitted as the tutorial does: (model, history)
    torch.manual_seed(seed)
    model = sf.SoftmaxClassifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    return model, sf.fit(model, batches or sf.make_batches(*data[0]), data[1], torch.nn.CrossEntropyLoss(),
                         optimizer, epochs, {"train_loss": [], "val_loss": [], "val_accuracy": []})


@pytest.fixture(scope="session")
def trained_model(tutorial_data):
    return train(tutorial_data, 3)[0].eval()  # 72.8% on the validation images


def ctrl_c_in_training(monkeypatch, evaluation):  # a real SIGINT, as a terminal sends, before that evaluation
    evaluate, calls = sf.evaluate, []

    def evaluate_or_interrupt(*args):
        calls.append(1)
        if len(calls) == evaluation:
            signal.raise_signal(signal.SIGINT)
        return evaluate(*args)
    monkeypatch.setattr(sf, "evaluate", evaluate_or_interrupt)


def one_error_line(err):  # the line that says what went wrong; not a traceback, nor more than argparse's usage
    lines = err.strip().splitlines()
    assert "Traceback" not in err and (len(lines) == 1 or len(lines) == 2 and lines[0].startswith("usage:")), err
    return lines[-1]


@pytest.fixture
def tiny_data(tmp_path, monkeypatch):  # 30 training and 7 test images as Debian's copy: (its folder, a --data-dir)
    (tmp_path / "debian").mkdir()
    checksums, images = {}, torch.randint(256, (37, 28, 28), generator=torch.Generator().manual_seed(1))
    for name, array in [("train-images-idx3", images[:30]), ("train-labels-idx1", torch.arange(30) % 10),
                        ("t10k-images-idx3", images[30:]), ("t10k-labels-idx1", torch.arange(7) % 10)]:
        # An IDX file: two zero bytes, 0x08 for unsigned bytes, the number of dimensions, their sizes, the data.
        raw = bytes([0, 0, 8, array.dim()]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
        raw += array.to(torch.uint8).numpy().tobytes()
        (tmp_path / "debian" / f"{name}-ubyte.gz").write_bytes(gzip.compress(raw))
        checksums[f"{name}-ubyte"] = hashlib.md5(raw).hexdigest()
    monkeypatch.setattr(sf, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setattr(sf, "RAW_FILES", checksums)
    return tmp_path / "debian", tmp_path / "data"
