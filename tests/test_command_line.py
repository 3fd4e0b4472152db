"""Appendix B: the command line, the files a run leaves, and how a run fails or is stopped."""
import gzip
import importlib.metadata
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock
from PIL import Image
from torchvision import datasets

import softmax_fashion as sf
from conftest import FIGURES, OUTPUTS, REPO, files, leftovers, one_error_line

SMALL = ["--train-size", "1000", "--val-size", "200"]


@pytest.fixture(scope="module", autouse=True)
def real_program(data_dir, tmp_path_factory):
    """The program itself, sent Ctrl-C as a terminal sends it once it trains. It runs beside this module's
    tests, from the first; the last checks how it ended: (its process, the thread that interrupts it, --out-dir)."""
    if not hasattr(os, "fork"):
        yield None
        return
    out_dir = tmp_path_factory.mktemp("real")
    process = subprocess.Popen(  # the script's own warnings as errors: a deprecated API that it calls fails
        [sys.executable, "-W", "error:::__main__", REPO / "softmax_fashion.py", "--epochs", "1000000",
         "--log-every", "1000", *SMALL, "--data-dir", data_dir, "--out-dir", out_dir], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def interrupt_in_training():  # SIG_DFL above: Ctrl-C as in a terminal, even where the tests ignore it
        for line in process.stdout:
            if line.startswith("Epoch: "):
                return process.send_signal(signal.SIGINT)
    interrupter = threading.Thread(target=interrupt_in_training)
    interrupter.start()
    yield process, interrupter, out_dir
    process.kill()
    interrupter.join()
    process.communicate()


def run(capsys, *argv):
    """sf.main() as the command line calls it: (exit status, stdout, stderr)."""
    status = sf.main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_complete_outputs(out_dir, test_data):
    """The run's eight files, each whole and about one model: the test accuracy is model.pt's."""
    assert files(out_dir) == OUTPUTS
    for name in FIGURES:
        with Image.open(out_dir / name) as figure:
            figure.verify()  # a whole PNG file
    # Strict JSON: no NaN or Infinity, which strict parsers (JavaScript's, say) reject.
    metrics = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"), parse_constant=pytest.fail)
    _, accuracy, _ = sf.evaluate(sf.load_model(out_dir / "model.pt"), *test_data)
    assert accuracy == metrics["test_accuracy"]
    return metrics


# --- A run, and what it leaves ---

def test_a_run_leaves_six_figures_a_model_and_its_metrics(data_dir, test_data, tmp_path, capsys):
    status, out, _ = run(capsys, "--epochs", "2", "--data-dir", data_dir, "--out-dir", tmp_path)
    assert status == 0
    assert out.startswith(f"Figures, model.pt and metrics.json go to {tmp_path}\n")
    assert [line.split(".")[0] for line in out.splitlines() if line.startswith("Epoch")] == ["Epoch: 0", "Epoch: 1"]
    metrics = assert_complete_outputs(tmp_path, test_data)
    assert sorted(sf.RUN_FILES) == OUTPUTS  # the files that main() checks before training are these
    assert metrics["settings"] == {
        "epochs": 2, "lr": 0.01, "batch_size": 16, "shuffle": False, "train_size": 4000, "val_size": 500,
        "seed": 0, "data_dir": str(data_dir), "out_dir": str(tmp_path), "device": "cpu", "log_every": 10,
        "show": False, "predict": None, "by_hand": False}
    assert metrics["epochs_run"] == len(metrics["train_loss"]) == len(metrics["val_accuracy"]) == 2
    assert metrics["interrupted"] is False and 70 < metrics["test_accuracy"] < 90
    assert out.count(", ") >= 9 and "  per class: T-shirt/top " in out and ", Ankle boot " in out


@pytest.fixture(scope="module")
def model_dir(trained_model, tmp_path_factory):
    """An --out-dir holding a trained model.pt."""
    out_dir = tmp_path_factory.mktemp("model")
    sf.save_model(trained_model, out_dir / "model.pt")
    return out_dir


def picture_file(case, folder):
    """A file of a kind that users have: (its path, what --predict should say of it)."""
    boot = Image.open(REPO / "docs" / "boot.png")  # a dark ankle boot on white, in RGB
    boot.load()  # and the file closed
    path = folder / {"price $5": "price $5 $x^2.png", "animated": "boot.gif", "not a picture": "notes.png",
                     "missing": "nope.png", "broken": "cut.png"}.get(case, f"{case}.png")
    if case in ("drawn", "price $5", "huge"):
        boot.save(path)
    elif case in ("tiny", "thin", "large"):
        Image.new("RGB", {"tiny": (1, 1), "thin": (1, 500), "large": (3000, 1200)}[case], "white").save(path)
    elif case == "palette":
        boot.convert("P", palette=Image.Palette.ADAPTIVE, colors=2).save(path)  # read as indices, it was a bag
    elif case == "animated":
        with Image.open(REPO / "docs" / "trousers.png") as trousers:
            boot.save(path, save_all=True, append_images=[trousers])
    elif case == "16-bit":
        Image.fromarray(np.array(boot.convert("L")).astype(np.uint16) * 257).save(path)  # 0..255 as 0..65535
    elif case == "broken":
        path.write_bytes((REPO / "docs" / "boot.png").read_bytes()[:600])
    elif case == "not a picture":
        path.write_text("hello")
    return path, {"huge": "exceeds limit", "broken": "not a picture that Pillow can read: image file is truncated",
                  "not a picture": "cannot identify image file", "missing": "No such file or directory"}.get(case)


@pytest.mark.parametrize("case", ["drawn", "price $5", "palette", "animated", "16-bit", "tiny", "thin", "large",
                                  "huge", "broken", "not a picture", "missing"])
def test_any_picture_file_gives_a_prediction_or_one_line(case, model_dir, tmp_path, monkeypatch, capsys):
    path, error = picture_file(case, tmp_path)
    if case == "huge":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 299)  # Pillow's limit, made small to test
    status, out, err = run(capsys, "--predict", path, "--out-dir", model_dir)
    if error:
        assert status == 1 and out == ""
        line = one_error_line(err)
        assert str(path) in line and error in line
    else:
        assert (status, err) == (0, "")
        assert re.fullmatch(rf"{re.escape(path.name)}: \S.* \d+%, \S.* \d+%, \S.* \d+%\nSaved predict.png\n", out)
        if case not in ("tiny", "thin", "large"):  # the boot, however its file holds it
            assert out.startswith(f"{path.name}: Ankle boot ")
        assert max(sf.read_picture(path).shape[1:]) <= 1024


def test_a_folder_stands_for_its_picture_files_in_name_order_printed_in_any_code_page(model_dir, tmp_path,
                                                                                        monkeypatch, capsys):
    folder = tmp_path / "\u7167\u7247"  # "photos", in Chinese
    (folder / "older").mkdir(parents=True)  # a folder inside is left alone
    for name in ("b.png", "a.png", "C.gif", "\u9774.png", ".hidden.png"):
        Image.open(REPO / "docs" / "boot.png").save(folder / name)
    for name in ("desktop.ini", "Thumbs.db"):  # what Windows keeps beside pictures: no picture extension
        (folder / name).write_bytes(b"\0\1")
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")  # strict, as Windows' redirected output
    monkeypatch.setattr(sys, "stdout", stdout)
    status = sf.main(["--predict", str(folder), "--out-dir", str(model_dir)])
    stdout.flush()
    assert (status, capsys.readouterr().err) == (0, "")
    lines = stdout.buffer.getvalue().decode("cp1252").splitlines()
    assert [line.split(":")[0] for line in lines] == ["C.gif", "a.png", "b.png", "\\u9774.png", "Saved predict.png"]


def test_among_many_pictures_each_bad_one_gets_its_own_line_and_the_others_are_drawn(model_dir, tmp_path, capsys):
    good, _ = picture_file("drawn", tmp_path)
    broken, missing = picture_file("broken", tmp_path), picture_file("missing", tmp_path)
    status, out, err = run(capsys, "--predict", good, broken[0], missing[0], good, "--out-dir", model_dir)
    assert status == 1 and "Traceback" not in err
    broken_line, missing_line = err.splitlines()  # a line each, in their order
    assert str(broken[0]) in broken_line and broken[1] in broken_line
    assert str(missing[0]) in missing_line and missing[1] in missing_line
    assert [line.split(":")[0] for line in out.splitlines()] == ["drawn.png", "drawn.png", "Saved predict.png"]
    with Image.open(model_dir / "predict.png") as figure:
        assert 400 < figure.size[1] < 500  # two rows, 1.9 inches each: the good picture, twice


def test_a_name_that_is_not_utf8_is_printed_and_drawn_without_noise(model_dir, tmp_path, monkeypatch, capsys):
    name = os.fsdecode("\u9774-".encode() + b"\xff.png")  # a Chinese character the font lacks, and a byte
    try:
        Image.open(REPO / "docs" / "boot.png").save(tmp_path / name)
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 names (macOS's) or Unicode (Windows')")
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # strict, as a terminal's
    monkeypatch.setattr(sys, "stdout", stdout)
    # Warnings are errors here (conftest.py): a glyph missing from the font would fail the run.
    assert sf.main(["--predict", str(tmp_path / name), "--out-dir", str(model_dir)]) == 0
    stdout.flush()
    assert stdout.buffer.getvalue().decode().startswith("\u9774-\ufffd.png: Ankle boot ")
    assert capsys.readouterr().err == ""


def test_predict_keeps_only_the_pictures_that_it_draws(trained_model, tmp_path, monkeypatch, capsys):
    read_picture, alive, most = sf.read_picture, set(), []

    def read_and_count(path):  # counts the pictures in memory at once: each leaves it when no name holds it
        picture = read_picture(path)
        alive.add(id(picture))
        weakref.finalize(picture, alive.discard, id(picture))
        most.append(len(alive))
        return picture
    monkeypatch.setattr(sf, "read_picture", read_and_count)
    monkeypatch.setattr(sf, "PICTURES_SHOWN", 2)  # 12 in the program: 2 draw faster
    assert sf.predict(trained_model, [REPO / "docs" / "boot.png"] * 20, tmp_path) == 0
    assert len(capsys.readouterr().out.splitlines()) == 21
    assert max(most) == 2 + 2, most  # the two drawn, the one read before and the one just read: 4 of 20


def os_message(action, *args):
    """The operating system's own words for what ``action(*args)`` does wrong."""
    with pytest.raises(OSError) as error:
        action(*args)
    return error.value.strerror


@pytest.mark.parametrize("case", ["missing", "a folder", "text", "other shapes", "NaN"])
def test_a_model_file_that_cannot_be_used_gives_one_line(case, trained_model, tmp_path, capsys):
    path, reason = tmp_path / "model.pt", None
    if case == "a folder":
        path.mkdir()
        reason = os_message(open, path, "rb")  # "Is a directory", or Windows' "Permission denied"
    elif case == "text":
        path.write_text("hello")
    elif case == "other shapes":
        torch.save({"linear.weight": torch.zeros(5, 784), "linear.bias": torch.zeros(5)}, path)
    elif case == "NaN":
        torch.save({"linear.weight": torch.full((10, 784), float("nan")), "linear.bias": torch.zeros(10)}, path)
    status, _, err = run(capsys, "--predict", REPO / "docs" / "boot.png", "--out-dir", tmp_path)
    assert status == 1
    assert {"missing": "no trained model at", "a folder": reason, "text": "not a file that torch.save wrote",
            "other shapes": "size mismatch for linear.weight", "NaN": "its weights hold NaN or infinity"}[case] \
        in one_error_line(err)


def test_help_shows_every_default(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0
    for default in ("(200)", "(0.01)", "(16)", "(4000)", "(500)", "(0)", "(10)", "(cpu)",
                    f"({REPO / 'data'})", f"({REPO / 'outputs'})"):
        assert default in " ".join(out.split()), default


# --- Wrong input: one line, a non-zero status, nothing written ---

BAD_FLAGS = [["--epochs", "0"], ["--epochs", "2.5"], ["--batch-size", "-16"], ["--log-every", "0"],
             ["--lr", "0"], ["--lr", "nan"], ["--lr", "inf"], ["--lr", "fast"], ["--seed", "-1"],
             ["--seed", str(2**64)], ["--train-size", "60001"], ["--train-size", "500", "--val-size", "500"],
             ["--val-size", "0"], ["--device", "tpu"]]
if not torch.cuda.is_available():
    BAD_FLAGS.append(["--device", "cuda:0"])


@pytest.mark.parametrize("argv", BAD_FLAGS, ids=" ".join)
def test_a_bad_flag_gives_one_line_and_status_2(argv, tmp_path, capsys):
    status, _, err = run(capsys, *argv, "--data-dir", tmp_path / "data", "--out-dir", tmp_path / "out")
    assert status == 2
    line = one_error_line(err)
    assert argv[-2] in line and argv[-1] in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["a file", "a file as --data-dir", "not writable", "name too long", "in the way"])
def test_a_folder_that_cannot_be_used_gives_one_line_before_training(case, data_dir, tmp_path, capsys):
    file, too_long, taken = tmp_path / "file", tmp_path / ("x" * 300), tmp_path / "taken"
    file.write_text("")
    (taken / "model.pt").mkdir(parents=True)
    # Each folder as the script first uses it, for the OS's own words, whatever the OS.
    flag, folder, reason = {
        "a file": ("--out-dir", file, os_message(file.mkdir, 0o777, True, True)),
        "a file as --data-dir": ("--data-dir", file, os_message((file / "FashionMNIST").mkdir, 0o777, True)),
        "not writable": ("--out-dir", tmp_path / "read-only", "Permission denied"),
        "name too long": ("--out-dir", too_long, os_message(too_long.mkdir)),
        "in the way": ("--out-dir", taken, "model.pt is a folder, where this run would write a file"),
    }[case]
    if case == "not writable":  # where this user cannot create files: root can't in /sys
        if not hasattr(os, "geteuid"):
            pytest.skip("a folder that is not writable needs POSIX permissions")
        folder.mkdir(mode=0o555)
        folder = Path("/sys") if os.geteuid() == 0 else folder
    folders = {"--data-dir": data_dir, "--out-dir": tmp_path / "out", flag: folder}
    status, out, err = run(capsys, *[item for pair in folders.items() for item in pair])
    assert status == 1 and "Epoch" not in out
    line = one_error_line(err)
    assert reason in line and str(folder) in line, line


@pytest.mark.parametrize("damage", ["a data file", "the offline copy", "the offline copy, cut short"])
def test_damaged_data_is_named_before_anything_is_trained_and_leaves_nothing(damage, tiny_debian_copy, tmp_path,
                                                                             capsys):
    copy, raw_dir = tiny_debian_copy[0] / "t10k-labels-idx1-ubyte.gz", tmp_path / "data" / "FashionMNIST" / "raw"
    if damage == "a data file":
        sf.prepare_data(tmp_path / "data")
        content = bytearray((raw_dir / "t10k-labels-idx1-ubyte").read_bytes())
        content[8 + 5] = 12  # the label of image 5 becomes 12, after the file's 8-byte header
        (raw_dir / "t10k-labels-idx1-ubyte").write_bytes(bytes(content))
        advice = re.escape(f"{raw_dir / 't10k-labels-idx1-ubyte'} is damaged (its MD5 checksum is not the "
                           f"original's): delete it and run again")
    else:
        copy.write_bytes(copy.read_bytes()[:20] if damage.endswith("short") else gzip.compress(b"other"))
        advice = re.escape(str(copy)) + " .*: reinstall it with 'sudo apt-get install --reinstall dataset-fashion"
    status, out, err = run(capsys, "--data-dir", tmp_path / "data", "--out-dir", tmp_path / "out")
    assert status == 1 and "Epoch" not in out and re.search(advice, one_error_line(err))
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    if damage != "a data file":
        assert "t10k-labels-idx1-ubyte" not in os.listdir(raw_dir)


def test_no_data_no_copy_and_no_network_says_how_to_get_the_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sf, "DEBIAN_DIR", tmp_path / "no-copy")
    monkeypatch.setattr(datasets.FashionMNIST, "mirrors", ["http://127.0.0.1:9/"])  # refused at once, as offline
    status, _, err = run(capsys, "--data-dir", tmp_path / "data", "--out-dir", tmp_path / "out")
    line = one_error_line(err)
    assert status == 1 and "could not be downloaded" in line and "apt-get install dataset-fashion-mnist" in line


def test_a_learning_rate_far_too_high_stops_in_one_line(data_dir, tmp_path, capsys):
    status, _, err = run(capsys, "--lr", "1e38", *SMALL, "--data-dir", data_dir, "--out-dir", tmp_path)
    assert status == 1
    assert "in epoch 0: the learning rate 1e+38 is too high" in one_error_line(err)
    assert files(tmp_path) == ["samples.png"]


def test_a_full_disk_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    path.write_text("the run before")
    write_bytes = Path.write_bytes

    def half_then_full(self, data):
        write_bytes(self, data[:3])
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(Path, "write_bytes", half_then_full)
    with pytest.raises(OSError) as error:
        sf.write_atomically(path, b"the new run")
    assert str(error.value) == f"[Errno 28] No space left on device: '{path}'"
    assert files(tmp_path) == ["metrics.json"] and path.read_text(encoding="utf-8") == "the run before"


def test_a_second_run_into_an_out_dir_in_use_is_refused_at_once_and_a_lock_file_left_is_no_lock(tmp_path, capsys):
    with FileLock(tmp_path / sf.LOCK_FILE):  # as the first run holds it
        status, out, err = run(capsys, "--out-dir", tmp_path)
    assert status == 1 and out == ""
    assert one_error_line(err).endswith(f"--out-dir {tmp_path} is in use by another run: wait for it to end, "
                                        f"or give this run another --out-dir")
    (tmp_path / sf.LOCK_FILE).touch()  # left behind (Windows removes it)
    sf.claim_out_dir(tmp_path, sf.RUN_FILES).release()


def test_a_file_that_another_program_holds_open_is_waited_for_with_one_line(tmp_path, monkeypatch, capsys):
    path, replace, refusals = tmp_path / "loss.png", os.replace, iter(range(15))

    def held_open_a_while(source, target):  # as Windows refuses while an image viewer holds the file
        if next(refusals, None) is not None:
            error = PermissionError(13, "Access is denied", str(target))
            error.winerror = 5  # as Windows sets it, and only Windows
            raise error
        replace(source, target)
    monkeypatch.setattr(os, "replace", held_open_a_while)
    monkeypatch.setattr(sf.time, "sleep", lambda seconds: None)
    sf.write_atomically(path, b"the new figure")
    assert path.read_bytes() == b"the new figure" and files(tmp_path) == ["loss.png"]
    assert one_error_line(capsys.readouterr().err) == f"softmax_fashion.py: {path} is open in another program: " \
                                                      f"close it, and the run goes on (or press Ctrl-C to quit)"


@pytest.mark.skipif(not hasattr(signal, "SIGPIPE"), reason="a closed pipe is an error of its own (EPIPE) on POSIX")
def test_output_into_a_closed_pipe_ends_quietly(data_dir, tmp_path, monkeypatch, capsys):
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head` does once it has what it wants
    with open(write_end, "w") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        assert sf.main(["--epochs", "1", *SMALL, "--data-dir", str(data_dir), "--out-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == ""


# --- Interrupts: Ctrl-C (SIGINT), SIGTERM, SIGHUP and SIGBREAK ---

@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK"])
def test_a_signal_before_training_quits_at_once(name, tmp_path, monkeypatch, capsys):
    if not hasattr(signal, name):
        pytest.skip(f"this system has no {name}")
    signum = getattr(signal, name)
    previous = signal.getsignal(signum)
    monkeypatch.setattr(sf, "prepare_data", lambda data_dir: signal.raise_signal(signum))
    status, _, err = run(capsys, "--data-dir", tmp_path / "data", "--out-dir", tmp_path / "out")
    assert status == 128 + signum  # 130, 143 and 129, as shells report them
    assert one_error_line(err) == f"Interrupted by {name}."
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signum) == previous


def signal_at(monkeypatch, module, function, signum, when):
    """Make module.function send ``signum`` to this process before each call for which ``when(args)`` is true."""
    original = getattr(module, function)

    def sending(*args, **kwargs):
        if when(args):
            signal.raise_signal(signum)
        return original(*args, **kwargs)
    monkeypatch.setattr(module, function, sending)


def test_sigterm_in_training_finishes_the_run_even_with_stdout_closed_and_lr_100(data_dir, test_data, tmp_path,
                                                                                monkeypatch, capsys):
    calls = []
    signal_at(monkeypatch, sf, "evaluate", signal.SIGTERM, lambda args: calls.append(1) or len(calls) == 3)
    monkeypatch.setattr(sys, "stdout", None)  # what Python makes of `>&-`
    status = sf.main(["--lr", "100", *SMALL, "--data-dir", str(data_dir), "--out-dir", str(tmp_path)])
    assert status == 143 and capsys.readouterr().err == ""
    metrics = assert_complete_outputs(tmp_path, test_data)
    assert metrics["interrupted"] is True and metrics["epochs_run"] == 2


def test_a_second_signal_quits_at_once_and_leaves_no_half_file(data_dir, tmp_path, monkeypatch, capsys):
    signal_at(monkeypatch, sf, "evaluate", signal.SIGINT, lambda args: True)  # stops training in epoch 0
    # The second signal comes while loss.png is written, its temporary file complete, just before the rename.
    signal_at(monkeypatch, os, "replace", signal.SIGTERM, lambda args: Path(args[1]).name == "loss.png")
    status, out, err = run(capsys, *SMALL, "--data-dir", data_dir, "--out-dir", tmp_path)
    assert status == 143 and one_error_line(err) == "Interrupted by SIGTERM."
    assert "Saved model.pt" in out and "Saved loss.png" not in out
    assert files(tmp_path) == ["model.pt", "samples.png"] and leftovers(tmp_path) == []  # no loss.png, whole or part


@pytest.mark.skipif(not hasattr(os, "fork"), reason="preexec_fn, and SIGINT sent to a child, need POSIX")
def test_ctrl_c_on_the_real_program_finishes_the_run_and_exits_130(real_program, test_data):
    process, interrupter, out_dir = real_program
    interrupter.join()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130 and err == ""
    assert "Interrupted in epoch" in out and "Saved metrics.json" in out
    assert assert_complete_outputs(out_dir, test_data)["interrupted"] is True


# --- Versions ---

@pytest.mark.skipif("OLDEST_COMBINATION" not in os.environ, reason="the oldest session of .ci/noxfile.py runs it")
def test_the_oldest_combination_has_the_lowest_versions_that_requirements_allow():
    requirements = (REPO / "requirements.txt").read_text(encoding="utf-8")
    floors = dict(re.findall(r"^([\w-]+)>=([\w.]+)", requirements, re.MULTILINE))
    assert sorted(floors) == ["filelock", "matplotlib", "pillow", "pytest", "torch", "torchvision"]
    assert sys.version_info[:2] == (3, 10)
    assert {name: importlib.metadata.version(name) for name in floors} == floors
