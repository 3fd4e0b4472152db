"""
A Softmax classifier for Fashion-MNIST images, in PyTorch
=========================================================

A Softmax classifier is the simplest neural network that sorts images into
classes: a single linear layer that gives each class a score (a "logit"),
followed by the softmax function, which turns the ten scores into ten
probabilities that add up to 1. It is also the last layer of almost every
deep image classifier, so it is worth knowing well.

This file is the whole tutorial. Read it top to bottom, then run it:

    python softmax_fashion.py            # the tutorial's settings: about 13 s on 2 CPU cores
    python softmax_fashion.py --help     # every setting you can change

It goes through the steps in this order:

1. Prepare the data: 4,000 Fashion-MNIST images, 3,500 to train on, 500 to validate.
2. Build the model: one ``nn.Linear(784, 10)``.
3. Train the model: cross-entropy loss and plain SGD, 200 epochs of batches of 16.
4. Plot the results: the training loss and the validation accuracy per epoch.
5. Beyond the tutorial: test-set accuracy, predicted probabilities drawn next
   to the images, the weights the model learned, its confusions, and a saved
   model that loads again.

Everything it draws or saves goes to ``outputs/`` (``--out-dir``).
"""

import argparse
import gc
import gzip
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import torch
import torchvision
from torch import nn
from torchvision import datasets

# The ten kinds of clothing, in the order of their label numbers 0 to 9
# (the same list as torchvision's ``datasets.FashionMNIST.classes``).
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE  # 784: each image becomes one row of 784 numbers
FULL_TRAIN_SIZE = 60_000  # images in the official training split

# The four files torchvision reads, and where Debian's package
# ``dataset-fashion-mnist`` keeps gzipped copies of them, for machines without
# internet access.
RAW_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

# How many test images ``predictions.png`` draws.
N_PREDICTIONS_SHOWN = 12
PROG = Path(__file__).name


class UserError(Exception):
    """Something the user can fix; main() prints it as one line and exits with status 1."""


def save_atomically(path, write):
    """Call ``write(tmp)``, then rename ``tmp`` to ``path``.

    A crash or Ctrl-C half-way leaves no half-written file under the real
    name: ``path`` is either the complete new file or what was there before.
    """
    tmp = path.with_name(f".{path.name}.partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
        raise UserError(f"could not write {path}: {error}") from None
    finally:
        tmp.unlink(missing_ok=True)


# =============================================================================
# 1. Prepare the data
# =============================================================================
# Fashion-MNIST has 70,000 greyscale photos of clothing, 28x28 pixels each:
# 60,000 for training and 10,000 for testing, each labelled with one of the
# ten CLASSES above. It was made as a harder drop-in replacement for the
# handwritten digits of MNIST.
#
# torchvision knows where to download it from and how to read its files. The
# dataset object it returns keeps every image as one uint8 tensor in
# ``dataset.data`` (60000 x 28 x 28) and the labels in ``dataset.targets``. We
# take the first images straight from those tensors: indexing the dataset one
# sample at a time would build 60,000 PIL images just to throw most away.
#
# Pixels are scaled from 0..255 to floats in [0, 1], exactly as
# ``transforms.ToTensor()`` does, and each image is flattened to a row of 784
# numbers, because a linear layer sees an image as one long vector.


def copy_offline_files(raw_dir, debian_dir=DEBIAN_DIR):
    """Decompress the Debian package's copy of Fashion-MNIST into ``raw_dir``.

    torchvision takes files that are already in ``<data dir>/FashionMNIST/raw``
    as downloaded. Debian recompressed its ``.gz`` files, so their checksums
    are not the ones torchvision expects, but their contents are the originals:
    decompressed under the names torchvision looks for, they are accepted.
    Does nothing when the files are there already or there is no Debian copy.
    """
    missing = [name for name in RAW_FILES if not (raw_dir / name).exists()]
    sources = [debian_dir / f"{name}.gz" for name in missing]
    if not missing or not all(source.exists() for source in sources):
        return
    print(f"Decompressing the offline copy of Fashion-MNIST from {debian_dir} into {raw_dir}")
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, source in zip(missing, sources):
        with gzip.open(source, "rb") as compressed:
            save_atomically(raw_dir / name, lambda tmp: write_stream(compressed, tmp))


def write_stream(stream, path):
    with open(path, "wb") as out:
        shutil.copyfileobj(stream, out)


def check_idx_file(path):
    """Raise UserError unless ``path`` holds as many bytes as its IDX header announces.

    Each file starts with a magic number (two zero bytes, the type 0x08 for
    unsigned bytes, and the number of dimensions) and the size of each
    dimension; the data follows. A download cut short fails this check.
    """
    fix = "delete it and run again to fetch a fresh copy"
    with open(path, "rb") as f:
        header = f.read(4)
        n_dims = header[3] if len(header) == 4 else 0
        sizes = f.read(4 * n_dims)
    if header[:3] != b"\x00\x00\x08" or n_dims not in (1, 3) or len(sizes) != 4 * n_dims:
        raise UserError(f"{path} is not a Fashion-MNIST file (its header is damaged): {fix}")
    dims = [int.from_bytes(sizes[i:i + 4], "big") for i in range(0, len(sizes), 4)]
    expected = 4 + 4 * n_dims + math.prod(dims)
    actual = path.stat().st_size
    if actual != expected:
        raise UserError(f"{path} is truncated or corrupt ({actual:,} bytes instead of {expected:,}): {fix}")


def load_fashion_mnist(data_dir, train=True, count=None, debian_dir=DEBIAN_DIR):
    """Return the first ``count`` images (N x 784, float32 in [0, 1]) and labels (N, int64).

    ``train=True`` reads the 60,000-image training split, ``train=False`` the
    10,000-image test split; ``count=None`` takes all of it.
    """
    raw_dir = Path(data_dir) / "FashionMNIST" / "raw"
    try:
        copy_offline_files(raw_dir, debian_dir)
        present = [raw_dir / name for name in RAW_FILES if (raw_dir / name).exists()]
        for path in present:
            check_idx_file(path)
    except OSError as error:
        raise UserError(f"cannot use {raw_dir}: {error.strerror or error}") from None

    try:
        # download=True fetches the files only when they are not in raw_dir yet.
        dataset = datasets.FashionMNIST(root=data_dir, train=train, download=True)
    except Exception as error:  # offline, torchvision raises RuntimeError or URLError
        reason = str(error).strip().splitlines()[-1]
        if len(present) == len(RAW_FILES):
            raise UserError(f"torchvision could not read Fashion-MNIST from {raw_dir} ({reason}): "
                            f"delete that folder and run again") from None
        raise UserError(
            f"Fashion-MNIST is not in {raw_dir} and could not be downloaded ({reason}); "
            f"connect to the internet, or install the offline copy with "
            f"'apt-get install dataset-fashion-mnist', or put the four files "
            f"{', '.join(RAW_FILES)} in {raw_dir}/"
        ) from None

    available = len(dataset.data)
    count = available if count is None else count
    if count > available:
        raise UserError(f"asked for {count:,} images, but {raw_dir} holds only {available:,}")
    images = dataset.data[:count].reshape(count, IMAGE_PIXELS).to(torch.float32).div_(255)
    labels = dataset.targets[:count].clone()  # int64 class indices; clone() lets the rest be freed
    return images, labels


def split(images, labels, val_size):
    """Split in dataset order: all but the last ``val_size`` samples train, the last validate.

    Shuffling first is the usual advice; the tutorial keeps the order so that
    every run sees the same split.
    """
    n_train = len(images) - val_size
    return (images[:n_train], labels[:n_train]), (images[n_train:], labels[n_train:])


def as_pictures(rows):
    """Rows of 784 numbers (a tensor) as 28x28 arrays that matplotlib can draw."""
    return rows.detach().cpu().reshape(-1, IMAGE_SIDE, IMAGE_SIDE).numpy()


def plot_samples(images, labels):
    """The first ten images with their class names, to see what the model is up against."""
    fig, axes = plt.subplots(2, 5, figsize=(9, 4.4))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.84, hspace=0.25)
    for ax, picture, label in zip(axes.flat, as_pictures(images), labels.tolist()):
        ax.imshow(picture, cmap="gray_r")  # dark on light, like a catalogue photo
        ax.set_title(CLASSES[label])
        ax.axis("off")
    fig.suptitle("The first 10 Fashion-MNIST training images")
    return fig


# =============================================================================
# 2. Build the model
# =============================================================================
# The model is one linear layer: 784 pixel values in, 10 class scores out,
#
#     logits = images @ weight.T + bias,   weight: 10 x 784, bias: 10
#
# so each class owns one row of 784 weights, a template that the image is
# compared with pixel by pixel (``weights.png`` draws the ten templates).
#
# Where is the softmax? ``forward`` returns the raw scores, the logits, on
# purpose: ``nn.CrossEntropyLoss`` applies log-softmax to the logits itself,
# which is more accurate than taking the log of probabilities computed
# separately. When we want the probabilities, ``predict_proba`` applies the
# softmax, exp(logit) / sum(exp(logits)), so that the ten numbers are
# positive and add up to 1.


class SoftmaxClassifier(nn.Module):
    def __init__(self, n_inputs=IMAGE_PIXELS, n_classes=len(CLASSES)):
        super().__init__()
        self.linear = nn.Linear(n_inputs, n_classes)

    def forward(self, images):
        """Logits (N x 10) for images of any shape with 784 pixels each (N x 784, N x 1 x 28 x 28, ...)."""
        return self.linear(images.reshape(-1, self.linear.in_features))

    @torch.no_grad()
    def predict_proba(self, images):
        """Class probabilities (N x 10): the softmax of the logits. Each row sums to 1."""
        return torch.softmax(self(images), dim=1)


def describe(model):
    """Print the shape of each learned tensor, as the tutorial shows its ``state_dict``."""
    print(model)
    for name, tensor in model.state_dict().items():
        print(f"  {name}: {tuple(tensor.shape)}")
    print(f"  {sum(p.numel() for p in model.parameters()):,} parameters")


# =============================================================================
# 3. Train the model
# =============================================================================
# Training repeats four steps for each batch of 16 images: clear the old
# gradients, compute the loss, let autograd compute the new gradients
# (``backward``), and move every weight a small step against its gradient
# (``optimizer.step()``, plain stochastic gradient descent with a learning
# rate of 0.01).
#
# The batches come in dataset order, exactly as a ``DataLoader`` without
# shuffling would give them, and so does the last, smaller batch (3,500 =
# 218 x 16 + 12). We cut them from the image tensor once, instead of letting
# a DataLoader stack 16 separate tensors again at every step of every epoch:
# the arithmetic, and therefore the trained weights, are the same.
#
# After each epoch (one pass over the 3,500 training images) we measure the
# accuracy on the 500 validation images, all in one batch and under
# ``torch.no_grad()``, since no gradients are needed there.
#
# On a CPU the script trains with one thread: a step on 16 images is so small
# that sharing it between cores costs more time than it saves.


def make_batches(images, labels, batch_size):
    """The (images, labels) batches that DataLoader(..., batch_size, shuffle=False) yields."""
    return list(zip(images.split(batch_size), labels.split(batch_size)))


def train_epoch(model, batches, loss_fn, optimizer):
    """Train for one pass over ``batches``; return the mean training loss per sample."""
    total_loss = 0.0
    for images, labels in batches:
        optimizer.zero_grad()  # gradients add up in .grad unless cleared
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)
    return total_loss / sum(len(labels) for _, labels in batches)


@torch.no_grad()
def evaluate(model, images, labels, loss_fn):
    """Return (accuracy in %, mean loss, predicted classes) on one batch of all ``images``."""
    logits = model(images)
    predicted = logits.argmax(dim=1)
    accuracy = 100 * (predicted == labels).sum().item() / len(labels)
    return accuracy, loss_fn(logits, labels).item(), predicted


def fit(model, batches, val_images, val_labels, loss_fn, optimizer, epochs, log_every, history):
    """Train for ``epochs`` epochs, printing progress every ``log_every`` epochs and after the last.

    Each epoch's mean training loss and validation accuracy are appended to
    ``history`` as soon as the epoch ends, so that a run stopped with Ctrl-C
    keeps the epochs that finished.
    """
    start = time.perf_counter()
    for epoch in range(epochs):
        train_loss = train_epoch(model, batches, loss_fn, optimizer)
        if not math.isfinite(train_loss):
            # Steps that are too large overshoot, and the loss grows until it overflows.
            lr = optimizer.param_groups[0]["lr"]
            raise UserError(f"training stopped in epoch {epoch}: the loss became {train_loss}, so the "
                            f"learning rate --lr {lr:g} is too high; try a smaller one")
        val_accuracy, _, _ = evaluate(model, val_images, val_labels, loss_fn)
        history["train_loss"].append(train_loss)
        history["val_accuracy"].append(val_accuracy)
        if epoch % log_every == 0 or epoch == epochs - 1:
            print(f"Epoch: {epoch}. Loss: {train_loss:.4f}. Accuracy: {val_accuracy:.1f} "
                  f"({time.perf_counter() - start:.1f} s)", flush=True)


# =============================================================================
# 4. Plot the results
# =============================================================================
# Two curves tell how training went: the training loss should fall quickly,
# then slowly; the validation accuracy should rise and level off. A
# validation accuracy that falls while the loss keeps falling would mean the
# model memorises the 3,500 training images instead of learning clothes.


def plot_curve(values, ylabel, title):
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    ax.plot(range(len(values)), values)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


def save_figure(fig, path, keep_open=False):
    """Save ``fig`` as a PNG; close it, unless it is kept open for plt.show()."""
    save_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    if keep_open:
        fig.canvas.manager.set_window_title(path.name)
    else:
        plt.close(fig)  # frees its memory
    print(f"Saved {path}")


# =============================================================================
# 5. Beyond the tutorial: test set, probabilities, weights, confusions
# =============================================================================
# Validation accuracy guided our choices, so it is a little optimistic. The
# honest score comes from the 10,000 test images, which training never saw.
#
# Then three pictures of what the model does:
# - predictions.png: test images next to the ten probabilities the model gives
#   them, wrong predictions in red;
# - weights.png: each class's row of 784 weights drawn as a 28x28 image, red
#   where a high pixel value (drawn dark in our pictures) raises that class's
#   score, blue where it lowers it;
# - confusion.png: how often each true class (row) was predicted as each
#   class (column); the diagonal holds the correct predictions.
#
# Finally the trained weights are saved to model.pt and loaded back into a
# fresh model, as another program would use them.


def confusion_matrix(labels, predicted, n_classes=len(CLASSES)):
    """Counts[i, j] = how many images of class i were predicted as class j."""
    counts = torch.bincount(labels * n_classes + predicted, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


def plot_predictions(images, labels, probabilities):
    """Each image beside a bar chart of its ten class probabilities."""
    pairs_per_row = 3
    n_rows = math.ceil(len(images) / pairs_per_row)
    # Laid out by hand: matplotlib's automatic layout would double the drawing time of these 24 axes.
    fig, axes = plt.subplots(n_rows, 2 * pairs_per_row, figsize=(13, 2.3 * n_rows + 0.6),
                             gridspec_kw={"width_ratios": [1, 1.5] * pairs_per_row}, squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.4 / fig.get_figheight(),
                        top=1 - 0.7 / fig.get_figheight(), wspace=0.45, hspace=0.45)
    guesses = probabilities.argmax(dim=1).tolist()
    rows = zip(as_pictures(images), labels.tolist(), guesses, probabilities.cpu().tolist())
    for i, (picture, label, guess, probs) in enumerate(rows):
        image_ax, bar_ax = axes.flat[2 * i], axes.flat[2 * i + 1]
        wrong = guess != label
        image_ax.imshow(picture, cmap="gray_r")
        image_ax.axis("off")
        image_ax.set_title(f"{CLASSES[guess]} {probs[guess]:.0%}\n(true: {CLASSES[label]})",
                           color="tab:red" if wrong else "black", fontsize=9)
        bars = bar_ax.barh(range(len(CLASSES)), probs, color="lightgray")
        bars[label].set_color("tab:blue")
        if wrong:
            bars[guess].set_color("tab:red")
        bar_ax.set_xlim(0, 1)
        bar_ax.set_xticks([0, 0.5, 1], ["0", "50%", "100%"], fontsize=7)
        bar_ax.set_yticks(range(len(CLASSES)), CLASSES, fontsize=7)
        bar_ax.invert_yaxis()
    fig.suptitle("Predicted probabilities for the first test images: "
                 "blue is the true class, red a wrong prediction")
    return fig


def plot_weights(weight):
    """The ten rows of the weight matrix as 28x28 images, on one colour scale centred at 0."""
    limit = weight.abs().max().item()
    fig, axes = plt.subplots(2, 5, figsize=(10, 4.6))
    fig.subplots_adjust(left=0.02, right=0.86, bottom=0.03, top=0.85, hspace=0.25)
    for ax, template, name in zip(axes.flat, as_pictures(weight), CLASSES):
        shown = ax.imshow(template, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(name)
        ax.axis("off")
    fig.colorbar(shown, cax=fig.add_axes((0.89, 0.1, 0.02, 0.68)), label="weight")
    fig.suptitle("Learned weights per class: red where a dark (high) pixel raises the class's score, "
                 "blue where it lowers it", fontsize=11)
    return fig


def plot_confusion(counts):
    total, correct = counts.sum().item(), counts.diagonal().sum().item()
    fig, ax = plt.subplots(figsize=(7.5, 6.6), layout="constrained")
    ax.imshow(counts.numpy(), cmap="Blues")
    ticks = range(len(CLASSES))
    ax.set_xticks(ticks, CLASSES, rotation=45, ha="right")
    ax.set_yticks(ticks, CLASSES)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    dark = counts.max().item() / 2
    for i, row in enumerate(counts.tolist()):
        for j, count in enumerate(row):
            ax.text(j, i, count, ha="center", va="center", fontsize=8,
                    color="white" if count > dark else "black")
    ax.set_title(f"Confusion matrix on {total:,} test images (accuracy {100 * correct / total:.1f}%)")
    return fig


# =============================================================================
# The command line
# =============================================================================
# Every setting, with its default and help text, in one place. The defaults
# are the tutorial's. Each value is checked here, before any data is loaded
# or any file written, and a bad one ends the run with one line naming it.


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        """One line on stderr and exit status 2, instead of argparse's usage block."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def whole_number(minimum, maximum, allowed):
    """An argparse type that accepts whole numbers from ``minimum`` to ``maximum``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}")
        return value
    return parse


positive_int = whole_number(1, math.inf, "a positive whole number")
seed_int = whole_number(0, 2**64 - 1, "a whole number from 0 to 2**64 - 1")  # what torch.manual_seed takes


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text!r}")
    return value


def available_devices():
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def parse_args(argv=None):
    parser = ArgumentParser(
        prog=PROG,
        description="Train a Softmax classifier (one linear layer) on Fashion-MNIST, "
                    "then plot and save what it learned.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--epochs", metavar="N", type=positive_int, default=200,
                        help="passes over the training images")
    parser.add_argument("--lr", type=positive_float, default=0.01,
                        help="learning rate of stochastic gradient descent")
    parser.add_argument("--batch-size", metavar="N", type=positive_int, default=16,
                        help="training images per gradient step")
    parser.add_argument("--train-size", metavar="N", type=positive_int, default=4000,
                        help=f"how many of the first training-split images to use (at most {FULL_TRAIN_SIZE:,}), "
                             "validation images included")
    parser.add_argument("--val-size", metavar="N", type=positive_int, default=500,
                        help="how many of those, taken from the end, to hold out for validation")
    parser.add_argument("--seed", metavar="N", type=seed_int, default=0,
                        help="seed for torch.manual_seed, set right before the model is built")
    parser.add_argument("--data-dir", metavar="DIR", type=Path, default=Path("data"),
                        help="where torchvision keeps Fashion-MNIST (FashionMNIST/raw/ inside it)")
    parser.add_argument("--out-dir", metavar="DIR", type=Path, default=Path("outputs"),
                        help="where the figures, model.pt and metrics.json go")
    parser.add_argument("--device", choices=("cpu", "cuda", "mps", "auto"), default="cpu",
                        help="where to train; auto picks cuda or mps when present "
                             "(the README says why cpu is the default)")
    parser.add_argument("--log-every", metavar="N", type=positive_int, default=10,
                        help="print progress every this many epochs, and after the last")
    parser.add_argument("--show", action="store_true",
                        help="also open the figures in windows at the end (needs a display)")
    args = parser.parse_args(argv)

    if args.train_size > FULL_TRAIN_SIZE:
        parser.error(f"argument --train-size: at most {FULL_TRAIN_SIZE} (the size of the "
                     f"training split), got {args.train_size}")
    if args.val_size >= args.train_size:
        parser.error(f"argument --val-size: must be smaller than --train-size ({args.train_size}) "
                     f"to leave images for training, got {args.val_size}")
    devices = available_devices()
    if args.device == "auto":
        args.device = devices[-1]
    elif args.device not in devices:
        parser.error(f"argument --device: {args.device} is not available on this machine "
                     f"(available: {', '.join(devices)})")
    return args


def prepare_folders(data_dir, out_dir):
    """Create both folders, and check that files can be written to ``out_dir``, before any real work."""
    for flag, folder in (("--data-dir", data_dir), ("--out-dir", out_dir)):
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{flag} {folder} is a file, not a folder")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"cannot create {flag} {folder}: {error.strerror or error}") from None
    try:
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as error:
        raise UserError(f"cannot write to --out-dir {out_dir}: {error.strerror or error}") from None


def display_available():
    """False where windows cannot open: a headless backend was asked for, or Linux without a display."""
    if os.environ.get("MPLBACKEND", "").lower() in ("agg", "pdf", "svg", "ps", "cairo", "template"):
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def write_metrics(path, args, history, interrupted, train_seconds, test=None):
    test = test or {}  # no test results when the run was interrupted
    metrics = {
        "settings": {key: str(value) if isinstance(value, Path) else value
                     for key, value in vars(args).items()},
        "interrupted": interrupted,
        "epochs_completed": len(history["train_loss"]),
        "train_loss": history["train_loss"],
        "val_accuracy": history["val_accuracy"],
        "final_val_accuracy": history["val_accuracy"][-1] if history["val_accuracy"] else None,
        "test_accuracy": test.get("accuracy"),
        "test_loss": test.get("loss"),
        "test_accuracy_per_class": test.get("accuracy_per_class"),
        "train_seconds": round(train_seconds, 3),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
    }
    save_atomically(path, lambda tmp: tmp.write_text(json.dumps(metrics, indent=2) + "\n"))
    print(f"Saved {path}")


def run(args):
    # Windows open only with --show and a display; otherwise draw with the
    # non-interactive Agg backend, which never waits for anyone.
    show = args.show and display_available()
    if args.show and not show:
        print("--show: no display here, so the figures are only saved, not shown.")
    if not show:
        matplotlib.use("Agg")
    prepare_folders(args.data_dir, args.out_dir)
    out = args.out_dir
    device = torch.device(args.device)

    # 1. Prepare the data.
    images, labels = load_fashion_mnist(args.data_dir, train=True, count=args.train_size)
    (train_images, train_labels), (val_images, val_labels) = split(images, labels, args.val_size)
    print(f"Training images: {tuple(train_images.shape)}, validation images: {tuple(val_images.shape)}")
    save_figure(plot_samples(train_images[:10], train_labels[:10]), out / "samples.png", show)
    train_images, train_labels = train_images.to(device), train_labels.to(device)
    val_images, val_labels = val_images.to(device), val_labels.to(device)

    # 2. Build the model. Seeding right before it fixes its random initial weights.
    torch.manual_seed(args.seed)
    model = SoftmaxClassifier()
    describe(model)
    model.to(device)

    # 3. Train the model.
    if device.type == "cpu":
        torch.set_num_threads(1)
    loss_fn = nn.CrossEntropyLoss()  # log-softmax + negative log-likelihood, on the logits
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    batches = make_batches(train_images, train_labels, args.batch_size)
    history = {"train_loss": [], "val_accuracy": []}
    start = time.perf_counter()
    try:
        fit(model, batches, val_images, val_labels, loss_fn, optimizer,
            args.epochs, args.log_every, history)
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
        print(f"\nInterrupted during epoch {len(history['train_loss'])}: saving the curves "
              f"and metrics of the {len(history['train_loss'])} epochs that finished.", flush=True)
    train_seconds = time.perf_counter() - start

    # 4. Plot the results.
    if history["train_loss"]:
        save_figure(plot_curve(history["train_loss"], "mean cross-entropy loss",
                               "Training loss per epoch"), out / "loss.png", show)
        save_figure(plot_curve(history["val_accuracy"], "accuracy (%)",
                               f"Validation accuracy per epoch ({args.val_size} images)"),
                    out / "accuracy.png", show)
    if interrupted:
        write_metrics(out / "metrics.json", args, history, True, train_seconds)
        return 130

    # 5. Beyond the tutorial. The test split is read, like the training split, through torchvision.
    test_images, test_labels = load_fashion_mnist(args.data_dir, train=False)
    test_images, test_labels = test_images.to(device), test_labels.to(device)
    test_accuracy, test_loss, predicted = evaluate(model, test_images, test_labels, loss_fn)
    counts = confusion_matrix(test_labels, predicted).cpu()
    per_class = (100 * counts.diagonal() / counts.sum(dim=1)).tolist()
    print(f"Test set ({len(test_labels):,} images): accuracy {test_accuracy:.1f}%, mean loss {test_loss:.4f}")
    for name, accuracy in zip(CLASSES, per_class):
        print(f"  {name:<12} {accuracy:5.1f}%")

    shown = slice(0, N_PREDICTIONS_SHOWN)
    probabilities = model.predict_proba(test_images[shown])
    save_figure(plot_predictions(test_images[shown], test_labels[shown], probabilities),
                out / "predictions.png", show)
    save_figure(plot_weights(model.linear.weight), out / "weights.png", show)
    save_figure(plot_confusion(counts), out / "confusion.png", show)

    # Save the learned weights (the state_dict), then load them into a fresh
    # model, as you would in another program, and check it predicts the same.
    model_path = out / "model.pt"
    state = {name: tensor.cpu() for name, tensor in model.state_dict().items()}
    save_atomically(model_path, lambda tmp: torch.save(state, tmp))
    reloaded = SoftmaxClassifier()
    reloaded.load_state_dict(torch.load(model_path, weights_only=True))
    reloaded.to(device)
    same = torch.equal(evaluate(reloaded, test_images, test_labels, loss_fn)[2], predicted)
    print(f"Saved {model_path}; reloaded, it predicts the same test classes: {same}")

    write_metrics(out / "metrics.json", args, history, False, train_seconds, test={
        "accuracy": test_accuracy,
        "loss": test_loss,
        "accuracy_per_class": dict(zip(CLASSES, per_class)),
    })
    if show:
        plt.show()
    return 0


def main(argv=None):
    # The imports above made about 370,000 Python objects (torchvision pulls in
    # torch's compiler stack) that live as long as the program. Freezing them
    # spares Python's garbage collector from scanning them again and again,
    # and once more at exit: about 0.7 s of a run here.
    gc.freeze()
    args = parse_args(argv)
    try:
        return run(args)
    except UserError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
