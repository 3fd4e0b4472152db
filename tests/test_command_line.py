"""Appendix B: a run and the files it writes, --predict on pictures of every kind, and each mistake's one line."""
import gzip
import io
import json
import os
import signal
import struct
import sys
import weakref

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets

import softmax_fashion as sf
from conftest import REPO, history, one_error_line

TINY = ["--train-size", "30", "--val-size", "10", "--epochs", "2"]  # for the tiny_data fixture's 30 images


def run(capsys, *argv):
    """sf.main() as the command line calls it: (exit status, stdout, stderr)."""
    status = sf.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_a_run_stopped_by_ctrl_c_writes_every_file_and_shuffle_by_hand_log_every_do_what_they_say(
        tiny_data, monkeypatch, capsys):
    evaluate, calls, out_dir = sf.evaluate, [], tiny_data[1].parent / "out"

    def ctrl_c_in_fourth_epoch(*args):  # a real SIGINT, as a terminal sends it
        calls.append(1)
        if len(calls) == 4:
            signal.raise_signal(signal.SIGINT)
        return evaluate(*args)
    monkeypatch.setattr(sf, "evaluate", ctrl_c_in_fourth_epoch)
    status, out, err = run(capsys, *TINY, "--epochs", "1000", "--shuffle", "--by-hand", "--log-every", "2",
                           "--seed", "5", "--data-dir", tiny_data[1], "--out-dir", out_dir)
    assert (status, err) == (130, "")  # as shells report Ctrl-C
    assert [line.split(".")[0] for line in out.splitlines() if line.startswith(("Epoch", "Interrupted"))] == [
        "Epoch: 0", "Epoch: 2", "Interrupted in epoch 3: training stops here"]  # every 2nd epoch, then Ctrl-C
    assert sorted(path.name for path in out_dir.iterdir()) == [
        "accuracy.png", "confusion.png", "loss.png", "metrics.json", "model.pt", "predictions.png", "samples.png", "weights.png"]
    for name in ("accuracy.png", "confusion.png", "loss.png", "predictions.png", "samples.png", "weights.png"):
        with Image.open(out_dir / name) as figure:
            figure.verify()  # a whole PNG file
    metrics = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
    test_data = sf.load_fashion_mnist(tiny_data[1], train=False)
    assert sf.evaluate(sf.load_model(out_dir / "model.pt"), *test_data)[1] == metrics["test_accuracy"]
    assert f"Test set (7 images): accuracy {metrics['test_accuracy']:.1f}%" in out

    data = sf.train_val_split(*sf.load_fashion_mnist(tiny_data[1], count=30), val_size=10)
    def autograd(batches):  # seeded, as the run seeds both the model and the shuffling with --seed
        torch.manual_seed(5)
        model = sf.SoftmaxClassifier()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        return sf.fit(model, batches, data[1], torch.nn.CrossEntropyLoss(), optimizer, 3, history())["train_loss"]
    shuffled = DataLoader(TensorDataset(*data[0]), 16, shuffle=True, generator=torch.Generator().manual_seed(5))
    assert metrics["train_loss"] == pytest.approx(autograd(shuffled), rel=1e-5)  # by hand: autograd's steps
    assert metrics["train_loss"] != pytest.approx(autograd(sf.make_batches(*data[0])), rel=1e-3)  # shuffled

    good = (out_dir / "model.pt").read_bytes()  # and a learning rate far too high leaves it as it was
    status, _, err = run(capsys, *TINY, "--lr", "1e38", "--data-dir", tiny_data[1], "--out-dir", out_dir)
    assert status == 1 and (out_dir / "model.pt").read_bytes() == good
    assert "in epoch 0: the learning rate 1e+38 is too high, try a smaller one" in one_error_line(err)


def picture_folder(folder):
    """Pictures of the kinds that users have, the ankle boot each time, and files beside them; returns the files
    that cannot be read, with the reasons."""
    boot = Image.open(REPO / "docs" / "boot.png").convert("RGB")  # a dark ankle boot on white
    folder.mkdir()
    boot.save(folder / "b.png")
    sideways = Image.Exif()
    sideways[0x0112] = 6  # EXIF's orientation: turned, as a phone held sideways saves it
    boot.rotate(90, expand=True).save(folder / "a.jpg", exif=sideways)
    boot.save(folder / "\u9774.gif")  # "boot", in Chinese
    boot.save(folder / "boot.im")  # a format that Pillow deprecates
    Image.fromarray(np.array(boot.convert("L")).astype(np.uint16) * 257).save(folder / "c16.png")  # 16 bits
    clear = np.array(boot.convert("RGBA"))
    clear[clear[..., 0] > 128] = 0  # the boot on transparent black
    Image.fromarray(clear).save(folder / "clear.png")
    described = Image.Exif()
    described[0x010E] = "a boot"  # its description, as one tag
    boot.save(folder / "exif.jpg", exif=described)
    data = bytearray((folder / "exif.jpg").read_bytes())
    tiff = data.index(b"Exif\0\0") + 6  # where EXIF's numbers count from; then its byte order and first IFD
    order = "<" if data[tiff:tiff + 2] == b"II" else ">"
    entry = tiff + struct.unpack_from(order + "I", data, tiff + 4)[0] + 2  # the tag's entry, the IFD's first
    struct.pack_into(order + "II", data, entry + 4, 100_000, 50_000)  # its data: past the end, as cameras may write
    (folder / "exif.jpg").write_bytes(bytes(data))
    boot.convert("P").save(folder / "cut.pcx")
    (folder / "cut.pcx").write_bytes((folder / "cut.pcx").read_bytes()[:300])  # Pillow: Errno 22, no name
    (folder / "notes.png").write_text("hello")
    boot.save(folder / "boot.pdf")  # Pillow writes PDFs but cannot read them
    boot.save(folder / ".hidden.png")
    (folder / "desktop.ini").write_text("[.ShellClassInfo]")
    (folder / "older").mkdir()
    return {"cut.pcx": "Invalid argument", "notes.png": "cannot identify image file"}  # what it cannot read


@pytest.mark.filterwarnings("ignore:IM image format", "ignore:Tag data larger")  # Pillow's, for two of them
def test_predict_classifies_every_picture_in_name_order_and_names_each_it_cannot_read(trained_model, tmp_path,
                                                                                        monkeypatch, capsys):
    torch.save(trained_model.state_dict(), tmp_path / "model.pt")
    unreadable = picture_folder(tmp_path / "\u7167\u7247")  # "photos"
    read_picture, alive, most = sf.read_picture, set(), []

    def read_and_count(path):  # the pictures in memory at once: each leaves when no name holds it
        picture = read_picture(path)
        alive.add(id(picture))
        weakref.finalize(picture, alive.discard, id(picture))
        most.append(len(alive))
        return picture
    monkeypatch.setattr(sf, "read_picture", read_and_count)
    monkeypatch.setattr(sf, "PICTURES_SHOWN", 2)  # 12 in the program: 2 draw faster
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")  # strict, as Windows' redirected output
    monkeypatch.setattr(sys, "stdout", stdout)
    status, _, err = run(capsys, "--predict", tmp_path / "\u7167\u7247", REPO / "docs" / "tshirt.png",
                         tmp_path / "nope.png", "--out-dir", tmp_path)
    stdout.flush()
    printed = [line.split(": ", 1) for line in stdout.buffer.getvalue().decode("cp1252").splitlines()]
    assert status == 1 and max(most) <= 2 + 2  # the two drawn, the one before and the one just read
    assert [name for name, _ in printed] == ["a.jpg", "b.png", "boot.im", "c16.png", "clear.png", "exif.jpg",
                                             "\\u9774.gif", "tshirt.png"]  # in name order; the rest left out
    assert [says.split(" ")[0] for _, says in printed] == ["Ankle"] * 7 + ["T-shirt/top"]
    errors = [line for line in err.splitlines() if line.startswith("softmax_fashion.py")]  # not Pillow's warnings
    assert len(errors) == 3 and "Traceback" not in err
    for line, name in zip(errors, ["cut.pcx", "notes.png", "nope.png"]):
        assert line.startswith(f"softmax_fashion.py: error: cannot read {tmp_path}") and name in line
        assert unreadable.get(name, "No such file or directory") in line
    with Image.open(tmp_path / "predict.png") as figure:
        assert 400 < figure.size[1] < 500  # two rows, 1.9 inches each


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--epochs", "2.5"], ["--batch-size", "-16"], ["--lr", "nan"],
                                  ["--seed", "-1"], ["--train-size", "500", "--val-size", "500"],
                                  ["--device", "tpu"], ["--colour"]], ids=" ".join)
def test_a_bad_flag_gives_one_line_and_status_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        sf.main([*argv, "--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out")])
    line = one_error_line(capsys.readouterr().err)
    assert exit_.value.code == 2 and argv[-1] in line and list(tmp_path.iterdir()) == []


def test_no_data_and_no_network_says_how_to_get_the_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sf, "DEBIAN_DIR", tmp_path / "no-copy")
    monkeypatch.setattr(datasets.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])  # refused at once, as offline
    status, _, err = run(capsys, "--data-dir", tmp_path / "data", "--out-dir", tmp_path / "out")
    line = one_error_line(err)
    assert status == 1 and "could not be downloaded" in line and "apt-get install dataset-fashion-mnist" in line


@pytest.mark.parametrize("damage", ["a data file", "the offline copy", "the offline copy, cut short"])
def test_damaged_data_is_named_before_anything_is_trained(damage, tiny_data, capsys):
    copy, raw_dir = tiny_data[0] / "t10k-labels-idx1-ubyte.gz", tiny_data[1] / "FashionMNIST" / "raw"
    if damage == "a data file":
        sf.prepare_data(tiny_data[1])
        (raw_dir / "t10k-labels-idx1-ubyte").write_bytes(b"\0" * 15)
        advice = f"{raw_dir / 't10k-labels-idx1-ubyte'} is damaged (its MD5 checksum is not the original's)"
    else:
        copy.write_bytes(copy.read_bytes()[:20] if damage.endswith("short") else gzip.compress(b"other"))
        advice = "reinstall it with 'sudo apt-get install --reinstall dataset-fashion-mnist'"
    status, out, err = run(capsys, *TINY, "--data-dir", tiny_data[1], "--out-dir", tiny_data[1].parent / "out")
    assert status == 1 and "Epoch" not in out and advice in one_error_line(err)


@pytest.mark.parametrize("case", ["missing", "a folder", "text", "other shapes"])
def test_a_model_file_that_cannot_be_used_gives_one_line(case, tmp_path, capsys):
    path = tmp_path / "model.pt"
    if case == "a folder":
        path.mkdir()
    elif case == "text":
        path.write_text("hello")
    elif case == "other shapes":
        torch.save({"linear.weight": torch.zeros(5, 784), "linear.bias": torch.zeros(5)}, path)
    status, _, err = run(capsys, "--predict", REPO / "docs" / "boot.png", "--out-dir", tmp_path)
    reason = {"missing": "no trained model at", "a folder": str(path)}.get(case, "is not a model of this tutorial")
    assert status == 1 and reason in one_error_line(err)


def test_an_out_dir_that_cannot_be_written_gives_the_os_line(tiny_data, capsys):
    file = tiny_data[1].parent / "a file"
    file.write_text("")
    status, out, err = run(capsys, *TINY, "--data-dir", tiny_data[1], "--out-dir", file)
    assert status == 1 and "Epoch" not in out and str(file) in one_error_line(err)


def test_help_lists_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit):
        sf.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for default in ("(200)", "(0.01)", "(16)", "(4000)", "(500)", "(0)", "(10)", "(cpu)", "(data)", "(outputs)"):
        assert default in out, default
