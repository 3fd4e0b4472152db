"""The fast tests: what each section teaches, on the real data; then the command line, and each mistake's line."""
import gzip
import io
import json
import os
import struct
import sys
import weakref

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets, transforms
from torchvision.transforms import v2

import softmax_fashion as sf
from conftest import REPO, ctrl_c_in_training, one_error_line, train


@pytest.mark.parametrize("shape", [(5, 784), (5, 28, 28), (5, 1, 28, 28)])
def test_the_model_gives_ten_logits_and_ten_probabilities_per_image_as_the_worked_example_says(shape):
    model, images = sf.SoftmaxClassifier(), torch.rand(shape)
    assert [tuple(t.shape) for t in model.state_dict().values()] == [(10, 784), (10,)]  # weight, bias
    probabilities = model.predict_proba(images)
    assert model(images).shape == probabilities.shape == (5, 10) and not probabilities.requires_grad
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(5))
    assert torch.equal(probabilities.argmax(dim=1), model(images).argmax(dim=1))
    z = torch.tensor([2.0, 1.0, 0.0])  # section 2's worked example
    p, loss = torch.softmax(z, dim=0), torch.nn.functional.cross_entropy(z.unsqueeze(0), torch.tensor([0]))
    text = (REPO / "softmax_fashion.py").read_text(encoding="utf-8")
    assert f"p = ({p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f})" in text and f"-log {p[0]:.3f} = {loss:.2f}" in text
    assert f"({p[0] - 1:.3f}, {p[1]:.3f}, {p[2]:.3f})" in text  # the gradient, p - one_hot(0)


@pytest.mark.parametrize("scale", [1, 1000], ids=["trained", "logits in the thousands"])
def test_by_hand_equals_pytorch_and_prints_the_numbers(scale, trained_model, tutorial_data, capsys):
    model = sf.SoftmaxClassifier()
    model.load_state_dict({name: tensor * scale for name, tensor in trained_model.state_dict().items()})
    _, (images, labels) = tutorial_data
    for i in range(3):  # assert_close inside raises where a number differs from PyTorch's
        sf.follow_one_image(model, images[i], labels[i])
    lines, logits = capsys.readouterr().out.splitlines(), model(images[2:3])[0]
    assert len(lines) == 15 and lines[10].startswith(f"One validation image, a {sf.CLASSES[labels[2]]} ")
    assert [float(x) for x in lines[-4].split()[2:]] == pytest.approx(logits.tolist(), abs=0.006)
    assert [float(x) for x in lines[-3].split()[2:]] == pytest.approx(torch.softmax(logits, 0).tolist(), abs=0.006)


def test_the_data_and_a_short_training_give_the_weights_of_the_original_program(tutorial_data, data_dir, capsys):
    assert [f"{name}.gz" for name in sf.RAW_FILES] == [name for name, _ in datasets.FashionMNIST.resources] and \
        list(sf.CLASSES) == datasets.FashionMNIST.classes
    (images, labels), (val_images, _) = tutorial_data
    assert images.shape == (3500, 784) and labels.shape == (3500,) and val_images.shape == (500, 784)
    # The original program: a DataLoader over a list of (ToTensor() image, label) pairs, in order.
    dataset = datasets.FashionMNIST(data_dir, train=True, transform=transforms.ToTensor())
    pairs = [dataset[i] for i in range(4000)]
    torch.manual_seed(0)
    original, accuracies = sf.SoftmaxClassifier(), []
    optimizer, criterion = torch.optim.SGD(original.parameters(), lr=0.01), torch.nn.CrossEntropyLoss()
    for _ in range(2):
        for x, y in DataLoader(pairs[:3500], batch_size=16):
            optimizer.zero_grad()
            criterion(original(x.view(-1, 28 * 28)), y).backward()
            optimizer.step()
        with torch.no_grad():
            right = sum((original(x.view(-1, 784)).argmax(1) == y).sum().item() for x, y in DataLoader(pairs[3500:]))
        accuracies.append(100 * right / 500)
    model, trained = train(tutorial_data, 2)
    for name, expected in original.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], expected, rtol=0, atol=1e-5)
    assert trained["val_accuracy"] == accuracies and trained["val_accuracy"][0] == pytest.approx(67, abs=3)
    assert trained["train_loss"][0] > trained["train_loss"][1] and trained["val_loss"][0] > trained["val_loss"][1]
    assert [line.split(".")[0] for line in capsys.readouterr().out.splitlines()] == ["Epoch: 0", "Epoch: 1"]


def test_ctrl_c_stops_fit_and_the_model_keeps_what_it_learned(tutorial_data, monkeypatch):
    ctrl_c_in_training(monkeypatch, 3)  # as a notebook's stop button sends it
    model, filled = sf.SoftmaxClassifier(), {"train_loss": [], "val_loss": [], "val_accuracy": []}
    start = model.linear.weight.clone()
    with pytest.raises(KeyboardInterrupt):  # sf.fit stops, and so would a loop of calls in a notebook
        sf.fit(model, sf.make_batches(*tutorial_data[0]), tutorial_data[1], torch.nn.CrossEntropyLoss(),
               torch.optim.SGD(model.parameters(), lr=0.01), 10, filled)
    assert len(filled["train_loss"]) == 2 and not torch.equal(model.linear.weight, start)


def test_the_confusion_matrix_counts_each_pair_and_a_saved_model_loads_again(trained_model, test_data, tmp_path):
    counts = sf.confusion_matrix(torch.tensor([0, 0, 0, 3, 9]), torch.tensor([0, 0, 5, 3, 1]))
    assert counts[0, 0] == 2 and counts[0, 5] == counts[3, 3] == counts[9, 1] == 1 and counts.sum() == 5
    predicted, accuracy, _ = sf.evaluate(trained_model, *test_data)
    counts = sf.confusion_matrix(test_data[1], predicted)
    assert counts.sum(dim=1).tolist() == [1000] * 10 and counts.diagonal().sum().item() / 100 == accuracy
    torch.save(trained_model.state_dict(), tmp_path / "model.pt")
    assert torch.equal(sf.evaluate(sf.load_model(tmp_path / "model.pt"), *test_data)[0], predicted)


def test_photos_are_prepared_back_into_the_images_that_they_were(test_data):
    images = test_data[0][:20].view(-1, 1, 28, 28)  # as shop photos: larger, dark on white, a margin, in RGB
    photos = v2.functional.pad(v2.functional.resize(1 - images, [168, 168]), [40], fill=1).expand(-1, 3, -1, -1)
    for pictures in (photos, images):  # and an image stays as it is
        prepared = torch.stack([sf.prepare_picture(picture) for picture in (pictures * 255).round().byte()])
        assert prepared.shape == images.shape and (prepared - images).abs().mean() < 0.05


# --- Appendix B: the command line ---

TINY = ["--train-size", "30", "--val-size", "10", "--epochs", "2"]  # for the tiny_data fixture's 30 images


def run(capsys, *argv):  # sf.main(), as the command line calls it: (exit status, stdout, stderr)
    status = sf.main([str(arg) for arg in argv])
    return (status, *capsys.readouterr())


def test_a_run_stopped_by_ctrl_c_writes_every_file_and_shuffle_by_hand_log_every_do_what_they_say(
        tiny_data, monkeypatch, capsys):
    out_dir = tiny_data[1].parent / "out"
    ctrl_c_in_training(monkeypatch, 4)
    status, out, err = run(capsys, *TINY, "--epochs", "1000", "--shuffle", "--by-hand", "--log-every", "2",
                           "--seed", "5", "--data-dir", tiny_data[1], "--out-dir", out_dir)
    assert (status, err) == (130, "")  # as shells report Ctrl-C
    assert [line.split(".")[0] for line in out.splitlines() if line.startswith(("Epoch", "Interrupted"))] == [
        "Epoch: 0", "Epoch: 2", "Interrupted in epoch 3: training stops here"]  # every 2nd epoch, then Ctrl-C
    figures = [f"{name}.png" for name in ("accuracy", "confusion", "loss", "predictions", "samples", "weights")]
    assert sorted(path.name for path in out_dir.iterdir()) == sorted(figures + ["metrics.json", "model.pt"])
    assert all(figure.read_bytes()[-8:-4] == b"IEND" for figure in out_dir.glob("*.png"))  # each PNG whole
    metrics = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
    test_data = sf.load_fashion_mnist(tiny_data[1], train=False)
    assert sf.evaluate(sf.load_model(out_dir / "model.pt"), *test_data)[1] == metrics["test_accuracy"]
    # By hand, the same steps as autograd's; shuffled, other batches than in order, each run the same.
    data = sf.train_val_split(*sf.load_fashion_mnist(tiny_data[1], count=30), val_size=10)
    shuffled = DataLoader(TensorDataset(*data[0]), 16, shuffle=True, generator=torch.Generator().manual_seed(5))
    assert metrics["train_loss"] == pytest.approx(train(data, 3, batches=shuffled, seed=5)[1]["train_loss"], rel=1e-5)
    assert metrics["train_loss"] != pytest.approx(train(data, 3, seed=5)[1]["train_loss"], rel=1e-3)
    good = (out_dir / "model.pt").read_bytes()  # and a learning rate far too high leaves it as it was
    status, _, err = run(capsys, *TINY, "--lr", "1e38", "--data-dir", tiny_data[1], "--out-dir", out_dir)
    assert status == 1 and (out_dir / "model.pt").read_bytes() == good
    assert "the learning rate 1e+38 is too high" in one_error_line(err)


@pytest.mark.filterwarnings("ignore:IM image format", "ignore:Tag data larger")  # Pillow's, for two of them
def test_predict_classifies_every_picture_in_name_order_and_names_each_that_it_cannot_read(trained_model, tmp_path,
                                                                                           monkeypatch, capsys):
    torch.save(trained_model.state_dict(), tmp_path / "model.pt")
    photos, boot = tmp_path / "\u7167\u7247", Image.open(REPO / "docs" / "boot.png").convert("RGB")  # dark on white
    photos.mkdir()  # "photos": the boot in files of the kinds that users have, and files to pass over or refuse
    for name in ("b.png", "boot.im", "\u9774.gif", "boot.pdf", ".hidden.png"):  # .im: deprecated; .pdf: not read
        boot.save(photos / name)  # 靴, "boot" in Chinese

    def exif(tag, kind, count, value):  # one tag, laid out as TIFF's: a header, then an IFD of one entry
        return b"Exif\0\0" + struct.pack("<2sHIHHHII", b"II", 42, 8, 1, tag, kind, count, value) + bytes(4)
    boot.rotate(90, expand=True).save(photos / "a.jpg", exif=exif(0x0112, 3, 1, 6))  # a phone held sideways
    boot.save(photos / "exif.jpg", exif=exif(0x010E, 2, 100_000, 50_000))  # a description past the file's end
    Image.fromarray(np.array(boot.convert("L")).astype(np.uint16) * 257).save(photos / "c16.png")  # 16 bits
    clear = np.array(boot.convert("RGBA"))
    clear[clear[..., 0] > 128] = 0  # the boot on transparent black
    Image.fromarray(clear).save(photos / "clear.png")
    boot.convert("P").save(photos / "cut.pcx")
    (photos / "cut.pcx").write_bytes((photos / "cut.pcx").read_bytes()[:300])  # Pillow: Errno 22, no name
    (photos / "notes.png").write_text("hello")
    (photos / "desktop.ini").write_text("[.ShellClassInfo]")
    (photos / "older").mkdir()
    read = ["a.jpg", "b.png", "boot.im", "c16.png", "clear.png", "exif.jpg", "\\u9774.gif"]
    try:  # a name that is not UTF-8, where the file system takes one
        boot.save(photos / os.fsdecode(b"\xff.png"))
        read.append("\\ufffd.png")
    except (OSError, UnicodeError):
        pass
    refused = {"cut.pcx": "Invalid argument", "notes.png": "cannot identify image", "nope.png": "No such file"}
    read_picture, alive, most = sf.read_picture, weakref.WeakSet(), []

    def read_and_count(path):  # and count the pictures in memory at once: each leaves when no name holds it
        alive.add(picture := read_picture(path))
        most.append(len(alive))
        return picture
    monkeypatch.setattr(sf, "read_picture", read_and_count)
    monkeypatch.setattr(sf, "PICTURES_SHOWN", 2)  # 12 in the program: 2 draw faster
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="cp1252"))  # as Windows' redirected
    status, _, err = run(capsys, "--predict", photos, REPO / "docs" / "tshirt.png",
                         tmp_path / "nope.png", "--out-dir", tmp_path)
    sys.stdout.flush()
    printed = [line.split(": ") for line in sys.stdout.buffer.getvalue().decode("cp1252").splitlines()]
    assert status == 1 and max(most) <= 2 + 2  # the two drawn, the one before and the one just read
    assert [name for name, _ in printed] == read + ["tshirt.png"]  # in name order; the rest passed over
    assert [says.split()[0] for _, says in printed] == ["Ankle"] * len(read) + ["T-shirt/top"]
    errors = [line for line in err.splitlines() if line.startswith("softmax_fashion.py")]  # not Pillow's warnings
    assert len(errors) == len(refused) and "Traceback" not in err
    for line, (name, reason) in zip(errors, refused.items()):
        assert line.startswith(f"softmax_fashion.py: error: cannot read {tmp_path}") and name in line and reason in line
    with Image.open(tmp_path / "predict.png") as figure:
        assert 400 < figure.size[1] < 500  # two rows, 1.9 inches each


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--epochs", "2.5"], ["--batch-size", "-16"], ["--lr", "nan"],
                                  ["--seed", "-1"], ["--train-size", "500", "--val-size", "500"],
                                  ["--device", "tpu"], ["--colour"]], ids=" ".join)
def test_a_bad_flag_gives_one_line_and_status_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        sf.main([*argv, "--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out")])
    line = one_error_line(capsys.readouterr().err)
    assert exit_.value.code == 2 and argv[-1] in line and any(flag in line for flag in argv if flag[0] == "-")
    assert not any(tmp_path.iterdir())


MISTAKES = {  # and the words of their one line
    "no data, no network": "could not be downloaded: connect to the internet, or install the offline copy with",
    "a damaged data file": "t10k-labels-idx1-ubyte is damaged (its MD5 checksum is not the original's)",
    "an offline copy that is another file": "t10k-labels-idx1-ubyte.gz does not decompress to the original file",
    "an offline copy cut short": "t10k-labels-idx1-ubyte.gz is damaged (",
    "a file as --out-dir": "out'",  # the OS's own words, then the name
    "no model.pt yet": "no trained model at",
    "a text as model.pt": "model.pt is not a model of this tutorial: train one with"}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_mistake_ends_in_one_line_that_names_what_to_fix_and_status_1(mistake, tiny_data, monkeypatch, capsys):
    copy, data, out = tiny_data[0] / "t10k-labels-idx1-ubyte.gz", tiny_data[1], tiny_data[1].parent / "out"
    argv = [*TINY, "--data-dir", data]
    if mistake == "no data, no network":
        monkeypatch.setattr(sf, "DEBIAN_DIR", data.parent / "no copy")
        monkeypatch.setattr(datasets.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])  # refused at once, as offline
    elif mistake == "a damaged data file":
        sf.prepare_data(data)
        (data / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").write_bytes(bytes(15))
    elif "offline copy" in mistake:
        copy.write_bytes(copy.read_bytes()[:20] if "short" in mistake else gzip.compress(b"another file"))
    elif mistake == "a file as --out-dir":
        out.write_text("")
    else:  # --predict, with a model.pt that cannot be used
        out.mkdir()
        if "text" in mistake:
            (out / "model.pt").write_text("hello")
        argv = ["--predict", REPO / "docs" / "boot.png"]
    status, printed, err = run(capsys, *argv, "--out-dir", out)
    assert status == 1 and "Epoch" not in printed and MISTAKES[mistake] in one_error_line(err)
