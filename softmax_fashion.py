"""
A Softmax classifier for Fashion-MNIST images, in PyTorch
=========================================================

A Softmax classifier is the simplest neural network that sorts images into
classes: one linear layer gives each class a score, and the softmax turns the
scores into probabilities. This tutorial follows "Building a Softmax Classifier
for Images in PyTorch" (Machine Learning Mastery), "the original" below: its
data, model and settings, reaching its numbers, with the why of each step.

Read sections 1 to 7 in order (the appendix holds the command line and the
safety net), then run it:

    python softmax_fashion.py                   # train for 200 epochs, then draw and save the results
    python softmax_fashion.py --predict my.jpg  # then classify a picture of your own
"""

import argparse
import gzip
import io
import json
import math
import os
import signal
import sys
import textwrap
import time
import warnings
import zipfile
import zlib
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.backends import BackendFilter, backend_registry
from PIL import Image, ImageOps
from torch import nn
from torchvision import datasets
from torchvision.datasets.utils import check_integrity
from torchvision.transforms import v2

try:
    import fcntl  # file locks, for the appendix; Windows has none
except ImportError:
    fcntl = None

# =============================================================================
# PyTorch for a NumPy user
# =============================================================================
# A tensor is PyTorch's array: it indexes, slices and broadcasts as a NumPy
# array does, and ``t.numpy()`` makes it one. NumPy's axis is PyTorch's
# dimension, ``dim``: ``t.sum(dim=1)`` is ``a.sum(axis=1)``, ``t.unsqueeze(0)``
# is ``np.expand_dims(a, 0)``, and ``t.item()`` is the number in a one-element
# tensor. A tensor lives on a device, "cpu" or a GPU such as "cuda", and
# ``t.to(device)`` moves it. New to a NumPy user:
# - ``requires_grad``: a tensor so marked (the model's weights, which
#   ``model.parameters()`` lists) makes PyTorch record each computation with it.
# - ``loss.backward()`` works back through that record and adds to each
#   weight's ``.grad`` its gradient: how fast the loss grows with that weight.
#   This is autograd, PyTorch's automatic differentiation.
# - ``torch.no_grad()``, as a ``with`` block or a decorator on a function,
#   turns the recording off where we only evaluate, saving time and memory.

# =============================================================================
# 1. Prepare the data
# =============================================================================
# Fashion-MNIST has 70,000 greyscale pictures of clothes, 28 x 28 pixels each
# (60,000 to train on, 10,000 to test on), labelled with one of ten classes,
# 0 to 9. torchvision, PyTorch's library for images, downloads it and keeps a
# split's images in one tensor, ``dataset.data``, its labels in ``targets``.
#
# Like the original, we keep the first 4,000 training images, so that training
# takes seconds, and split them in order: 3,500 to train on, the last 500 to
# validate, that is, to measure the model on images it does not learn from.

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",  # the names of classes 0 to 9
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IMAGE_SIDE = 28
TRAIN_SIZE = 4000  # the first 4,000 images of the training split...
VAL_SIZE = 500     # ...of which the last 500 validate


def load_fashion_mnist(data_dir, train=True, count=None):
    """The first ``count`` images (all if None) of the training or the test split, and their labels."""
    dataset = datasets.FashionMNIST(data_dir, train=train, download=True)  # downloads only once
    images = dataset.data[:count]     # N x 28 x 28 whole numbers, from 0 (black) to 255 (white)
    labels = dataset.targets[:count]  # N class numbers, 0 to 9
    # Floats in [0, 1], as the original's ToTensor() makes them; flatten(start_dim=1) keeps dimension 0
    # (the images) and lays each one out as a row of 784 numbers: a linear layer sees a vector.
    return images.flatten(start_dim=1).float() / 255, labels


def train_val_split(images, labels, val_size=VAL_SIZE):
    """((train images, train labels), (validation images, validation labels)), in dataset order."""
    n_train = len(images) - val_size
    return (images[:n_train], labels[:n_train]), (images[n_train:], labels[n_train:])


def as_pictures(rows):
    """Rows of 784 numbers as 28 x 28 NumPy arrays for matplotlib (detach(): without autograd's record)."""
    return rows.detach().cpu().reshape(-1, IMAGE_SIDE, IMAGE_SIDE).numpy()


def plot_ten(rows, titles, suptitle, **imshow_args):
    """Ten rows of 784 numbers drawn as 28 x 28 pictures; returns the figure and the last image drawn."""
    fig, axes = plt.subplots(2, 5, figsize=(10, 4.6))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.85, hspace=0.25)
    for ax, picture, title in zip(axes.flat, as_pictures(rows), titles):
        shown = ax.imshow(picture, **imshow_args)
        ax.set_title(title)
        ax.set_axis_off()
    fig.suptitle(suptitle)
    return fig, shown


# =============================================================================
# 2. Build the model
# =============================================================================
# One linear layer: 784 pixel values in, ten class scores, the logits, out:
#
#     logits = images @ weight.T + bias        (weight: 10 x 784, bias: 10)
#
# Each class has a row of 784 weights, a template that images are compared
# with pixel by pixel (``weights.png`` draws them). nn.Linear starts them at
# small random values; ``torch.manual_seed`` fixes which, for repeatable runs.
#
# Where is the softmax? ``forward`` returns logits on purpose: the loss,
# ``nn.CrossEntropyLoss``, applies the softmax itself, more accurately than
# the log of separately computed probabilities; ``predict_proba`` applies it
# where we want probabilities.
#
# Worked by hand, for three classes: logits z = (2, 1, 0), true class y = 0.
# - Softmax: p = exp(z) / sum(exp(z)). Subtract the largest logit first: the
#   numerator and the denominator shrink by the same factor, so p stays, and
#   exp never meets a large number (exp(89) overflows 32-bit floats).
#   exp(z - 2) = (1, 0.368, 0.135), summing to 1.503: p = (0.665, 0.245, 0.090).
# - Cross-entropy loss: -log p[y] = -log 0.665 = 0.41: near 0 when the true
#   class gets a probability near 1, large when it gets little.
# - Its gradient: differentiate -log p[y] = log(sum(exp(z))) - z[y] by each
#   z[i] to get p - one_hot(y), where one_hot(y) is zeros with a 1 at y:
#   (-0.335, 0.245, 0.090). Through logits = x @ weight.T + bias, autograd
#   turns it into the gradients that training uses: bias.grad = p - one_hot(y),
#   and row i of weight.grad = (p - one_hot(y))[i] * x. A step against them
#   (section 3) moves the true class's template towards the image x, in
#   proportion to 1 - p[y], and each other one away, in proportion to p[i].
# ``follow_one_image`` does the same on a real image, checked against PyTorch.


class SoftmaxClassifier(nn.Module):
    def __init__(self, n_inputs=IMAGE_SIDE * IMAGE_SIDE, n_classes=len(CLASSES)):
        super().__init__()  # lets nn.Module keep track of the layers added below
        self.linear = nn.Linear(n_inputs, n_classes)

    def forward(self, images):
        """Logits, N x 10, for N images of any shape (N x 784, N x 28 x 28, N x 1 x 28 x 28)."""
        return self.linear(images.flatten(start_dim=1))

    @torch.no_grad()
    def predict_proba(self, images):
        """Class probabilities, N x 10, each row adding up to 1 (call model.eval() first, as before any prediction)."""
        if images.max() > 1:
            raise ValueError("pixel values must be in [0, 1], as in training: divide them by 255")
        return torch.softmax(self(images), dim=1)  # calling a module runs its forward()


def follow_one_image(model, image, label):
    """Print one image's logits, softmax, loss and gradient, computed by hand and checked against PyTorch."""
    logits = model(image.unsqueeze(0))[0]  # the model takes a batch: here, a batch of one image
    torch_loss = nn.functional.cross_entropy(logits.unsqueeze(0), label.unsqueeze(0))  # nn.CrossEntropyLoss
    # autograd.grad returns the gradient with respect to any tensor, here the logits, leaving .grad alone.
    (torch_gradient,) = torch.autograd.grad(torch_loss, logits)

    with torch.no_grad():
        shifted = logits - logits.max()  # z - max(z), as worked above
        probabilities = shifted.exp() / shifted.exp().sum()
        # -log p[y] = log(sum(exp(z - max))) - (z[y] - max): no p[y] rounded to 0 before the log.
        loss = shifted.exp().sum().log() - shifted[label]
        gradient = probabilities - nn.functional.one_hot(label, len(CLASSES))
        # assert_close raises, with the numbers, if they differ by more than float32 rounding.
        torch.testing.assert_close(probabilities, torch.softmax(logits, dim=0))
        torch.testing.assert_close(loss, torch_loss)
        torch.testing.assert_close(gradient, torch_gradient)

    def row(values):
        return " ".join(f"{value:7.2f}" for value in values.tolist())
    y = label.item()
    print(f"One validation image, a {CLASSES[y]} (class {y}), by hand; PyTorch's numbers are the same:")
    print(f"  logits z               {row(logits)}")
    print(f"  softmax p              {row(probabilities)}")
    print(f"  loss -log p[{y}]         {loss.item():7.4f}")
    print(f"  gradient p - one_hot   {row(gradient)}")


# =============================================================================
# 3. Train the model
# =============================================================================
LEARNING_RATE = 0.01  # the original's settings, the flags' defaults
BATCH_SIZE = 16
EPOCHS = 200
# Each step takes a batch of 16 images: clear the old gradients (``backward``
# adds to ``.grad``), compute the batch's mean loss from its logits and its
# labels (class numbers), let ``backward`` compute each weight's gradient, and
# step: ``optimizer.step()`` does weight -= lr * gradient, the learning rate
# lr = 0.01 setting the step's size. This is stochastic gradient descent
# (SGD): stochastic, as each step sees a sample of the data. A pass over all
# the training images is an epoch, numbered from 0 as in the original.
#
# The original's DataLoader, PyTorch's batching helper, gives the images in
# order, 16 at a time, the last batch smaller (3,500 = 218 x 16 + 12). Ours
# are one tensor already, so ``tensor.split(16)`` cuts the same batches
# (pieces of 16 rows; NumPy's split takes the number of pieces), with no
# stacking of 16 images at every step. The weights end equal.
#
# ``model.train()`` and ``model.eval()`` switch layers that behave otherwise
# in training, such as dropout. This model has none, but every loop should
# call them. Ctrl-C raises KeyboardInterrupt; ``fit`` catches it, and the
# model keeps what it has learned.


def make_batches(images, labels, batch_size=BATCH_SIZE, generator=None):
    """One epoch's (images, labels) batches: in order, or shuffled with a random ``generator``."""
    if generator is not None:
        order = torch.randperm(len(labels), generator=generator).to(labels.device)
        images, labels = images[order], labels[order]
    return list(zip(images.split(batch_size), labels.split(batch_size)))


def train_epoch(model, batches, loss_fn, optimizer):
    """One pass over ``batches``; returns the mean loss per image."""
    model.train()
    total_loss, seen = 0.0, 0
    for images, labels in batches:
        optimizer.zero_grad()
        loss = loss_fn(model(images), labels)  # the mean loss of the batch
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)  # times its size: the last batch is smaller
        seen += len(labels)
    return total_loss / seen


@torch.no_grad()
def evaluate(model, images, labels):
    """(predicted classes, accuracy in %, mean loss) on all ``images`` at once."""
    model.eval()
    logits = model(images)
    predicted = logits.argmax(dim=1)  # the largest logit, so also the largest probability
    accuracy = 100 * (predicted == labels).sum().item() / len(labels)
    loss = nn.functional.cross_entropy(logits, labels)  # nn.CrossEntropyLoss as a function
    return predicted, accuracy, loss.item()


def fit(model, train_data, val_data, epochs=EPOCHS, lr=LEARNING_RATE, batch_size=BATCH_SIZE,
        shuffle_seed=None, log_every=10):
    """Train ``model`` on (images, labels) pairs; return each epoch's training loss and validation accuracy.
    With a ``shuffle_seed``, each epoch's batches come in a new order drawn from a generator with that seed."""
    loss_fn = nn.CrossEntropyLoss()  # softmax, then -log p[true class], averaged over the batch
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    generator = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
    history = {"train_loss": [], "val_accuracy": []}
    start = time.perf_counter()
    try:
        for epoch in range(epochs):
            batches = make_batches(*train_data, batch_size, generator)
            train_loss = train_epoch(model, batches, loss_fn, optimizer)
            if not math.isfinite(train_loss):  # steps too large overshoot, and the loss overflows
                raise FloatingPointError(f"the training loss became {train_loss} in epoch {epoch}: "
                                         f"the learning rate {lr:g} is too high, try a smaller one")
            _, val_accuracy, _ = evaluate(model, *val_data)
            history["train_loss"].append(train_loss)
            history["val_accuracy"].append(val_accuracy)
            if epoch % log_every == 0 or epoch == epochs - 1:
                print(f"Epoch: {epoch}. Loss: {train_loss:.4f}. Accuracy: {val_accuracy:.1f} "
                      f"({time.perf_counter() - start:.1f} s)", flush=True)
    except KeyboardInterrupt:
        print(f"Interrupted in epoch {len(history['train_loss'])}: training stops here, "
              f"and the model keeps what it has learned.", flush=True)
    return history


# =============================================================================
# 4. Plot the results
# =============================================================================
# The training loss should fall quickly, then slowly; the validation accuracy
# should rise and level off. If it fell while the loss kept falling, the model
# would be memorising its 3,500 training images instead of learning clothes.


def plot_curve(values, ylabel, title):
    fig, ax = plt.subplots()
    ax.plot(range(len(values)), values)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


def save_figure(fig, path, show=False):
    """Save ``fig`` as a PNG file; close it unless it is to be shown."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    write_atomically(path, buffer.getvalue())  # the appendix: written whole or not at all
    if not show:
        plt.close(fig)
    print(f"Saved {path.name}")


# =============================================================================
# 5. Beyond the original: test set, probabilities, weights, confusions, saving
# =============================================================================
# We watch the validation accuracy to choose settings, so it ends up a little
# optimistic: the 10,000 test images, used only here, give the final score.
# They are also many more. On 500 images chance alone moves the accuracy by
# about 1.6 points (the standard error, sqrt(0.84 * 0.16 / 500)); on 10,000, 0.4.
PREDICTIONS_SHOWN = 12  # test images that predictions.png draws


def confusion_matrix(labels, predicted, n_classes=len(CLASSES)):
    """counts[i, j]: how many images of class i were predicted as class j."""
    pairs = labels * n_classes + predicted  # each (true, predicted) pair as one number
    return torch.bincount(pairs, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def draw_probabilities(ax, probabilities, true_class=None):
    """A bar per class: the most probable one dark, the true one blue, a wrong guess red."""
    guess = probabilities.argmax().item()
    colors = ["lightgray"] * len(CLASSES)
    colors[guess] = "dimgray" if true_class is None else "tab:red"
    if true_class is not None:
        colors[true_class] = "tab:blue"  # over the red when the guess is right
    ax.barh(range(len(CLASSES)), probabilities.tolist(), color=colors)
    ax.set_xlim(0, 1)
    ax.set_xticks([0, 0.5, 1], ["0", "50%", "100%"], fontsize=7)
    ax.set_yticks(range(len(CLASSES)), CLASSES, fontsize=7)
    ax.invert_yaxis()  # class 0 at the top


def plot_predictions(images, labels, probabilities, per_row=3):
    """Each image beside a bar chart of its ten class probabilities."""
    n_rows = math.ceil(len(images) / per_row)
    height = 2.3 * n_rows + 0.6  # inches
    fig, axes = plt.subplots(n_rows, 2 * per_row, figsize=(13, height), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.5] * per_row})
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.4 / height, top=1 - 0.7 / height, wspace=0.45, hspace=0.45)
    rows = zip(as_pictures(images), labels.tolist(), probabilities.cpu())
    for i, (picture, label, probs) in enumerate(rows):
        image_ax, bar_ax = axes.flat[2 * i], axes.flat[2 * i + 1]
        guess = probs.argmax().item()
        image_ax.imshow(picture, cmap="gray")
        image_ax.set_axis_off()
        image_ax.set_title(f"{CLASSES[guess]} {probs[guess].item():.0%}\n(true: {CLASSES[label]})",
                           color="tab:red" if guess != label else "black", fontsize=9)
        draw_probabilities(bar_ax, probs, label)
    fig.suptitle("Predicted probabilities for the first test images: "
                 "blue is the true class, red a wrong prediction")
    return fig


def plot_weights(weight):
    """The ten rows of the weight matrix as 28 x 28 images, on one colour scale centred at 0."""
    limit = weight.abs().max().item()
    fig, shown = plot_ten(weight, CLASSES, "Learned weights per class: red where a light pixel raises the "
                          "class's score, blue where it lowers it", cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.subplots_adjust(right=0.86)  # room for the colour bar
    fig.colorbar(shown, cax=fig.add_axes((0.89, 0.1, 0.02, 0.68)), label="weight")
    return fig


def plot_confusion(counts):
    total, correct = counts.sum().item(), counts.diagonal().sum().item()
    fig, ax = plt.subplots(figsize=(7.5, 6.6))
    fig.subplots_adjust(left=0.2, right=0.98, bottom=0.2, top=0.93)
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


def save_model(model, path):
    """Save the learned tensors, the state_dict; the class itself is in this file."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    write_atomically(path, buffer.getvalue())  # the appendix: written whole or not at all


def load_model(path, device="cpu"):
    """A new SoftmaxClassifier with the weights saved in ``path``, on ``device``."""
    model = SoftmaxClassifier()
    # map_location puts the tensors on ``device``, whichever device they were saved from.
    # weights_only=True loads tensors and nothing else: a .pt file could also hold code to run.
    model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return model.to(device)


# =============================================================================
# 6. Putting it together
# =============================================================================
# Sections 1 to 5 in order, with the flags' values in ``settings``. The model
# is saved as soon as training ends: nothing later can lose it.


def run_tutorial(settings):
    """Train, plot and save; return what metrics.json records."""
    out, show = settings.out_dir, settings.show
    device = torch.device(settings.device)

    # 1. Prepare the data. The test images are put aside for section 5.
    images, labels = load_fashion_mnist(settings.data_dir, count=settings.train_size)
    test_images, test_labels = load_fashion_mnist(settings.data_dir, train=False)
    (train_images, train_labels), (val_images, val_labels) = train_val_split(images, labels, settings.val_size)
    print(f"Images: {len(train_images):,} to train, {len(val_images):,} to validate, "
          f"{len(test_images):,} to test, each a row of {train_images.shape[1]} pixels")
    samples, _ = plot_ten(train_images[:10], [CLASSES[label] for label in train_labels[:10]],
                          "The first 10 Fashion-MNIST training images", cmap="gray")
    save_figure(samples, out / "samples.png", show)

    # 2. Build the model. Seeding first fixes its random starting weights.
    torch.manual_seed(settings.seed)
    model = SoftmaxClassifier().to(device)
    print(model)
    for name, tensor in model.state_dict().items():  # the tensors it learns, which the original prints
        print(f"  {name}: {tuple(tensor.shape)}")

    # 3. Train the model, then save it at once.
    train_data = train_images.to(device), train_labels.to(device)
    val_images, val_labels = val_images.to(device), val_labels.to(device)
    history = fit(model, train_data, (val_images, val_labels), epochs=settings.epochs, lr=settings.lr,
                  batch_size=settings.batch_size, shuffle_seed=settings.seed if settings.shuffle else None,
                  log_every=settings.log_every)
    save_model(model, out / "model.pt")
    print("Saved model.pt")
    model.eval()  # from here on the model only predicts
    follow_one_image(model, val_images[0], val_labels[0])  # section 2's check, on the trained model

    # 4. Plot the results.
    save_figure(plot_curve(history["train_loss"], "mean cross-entropy loss", "Training loss per epoch"),
                out / "loss.png", show)
    save_figure(plot_curve(history["val_accuracy"], "accuracy (%)",
                           f"Validation accuracy per epoch ({len(val_images)} images)"), out / "accuracy.png", show)

    # 5. Beyond the original.
    test_images, test_labels = test_images.to(device), test_labels.to(device)
    predicted, test_accuracy, test_loss = evaluate(model, test_images, test_labels)
    counts = confusion_matrix(test_labels, predicted).cpu()
    per_class = 100 * counts.diagonal() / counts.sum(dim=1)  # right answers over images, for each true class
    print(f"Test set ({len(test_labels):,} images): accuracy {test_accuracy:.1f}%, mean loss {test_loss:.4f}")
    print("  per class: " + ", ".join(f"{name} {accuracy:.0f}%" for name, accuracy in zip(CLASSES, per_class)))
    shown = slice(0, PREDICTIONS_SHOWN)
    probabilities = model.predict_proba(test_images[shown])
    save_figure(plot_predictions(test_images[shown], test_labels[shown], probabilities),
                out / "predictions.png", show)
    save_figure(plot_weights(model.linear.weight), out / "weights.png", show)
    save_figure(plot_confusion(counts), out / "confusion.png", show)
    reloaded_predicted, _, _ = evaluate(load_model(out / "model.pt", device), test_images, test_labels)
    print(f"Loaded model.pt into a new model: it predicts the same test classes: "
          f"{torch.equal(reloaded_predicted, predicted)}")

    flags = {key: str(value) if isinstance(value, Path) else value for key, value in vars(settings).items()}
    epochs_run = len(history["train_loss"])
    record = {"settings": flags, "epochs_run": epochs_run, "interrupted": epochs_run < settings.epochs, **history,
              "test_accuracy": test_accuracy, "test_loss": test_loss, "torch_version": torch.__version__}
    # allow_nan=False: strict JSON, which every parser reads; a NaN here would be a bug.
    write_atomically(out / "metrics.json", json.dumps(record, indent=2, allow_nan=False).encode())
    print("Saved metrics.json")
    if show:
        plt.show()
    return record


# =============================================================================
# 7. Use the model
# =============================================================================
# A trained model is for new pictures, a photo of a shoe, say. But it knows
# only centred garments, light on black, 28 x 28 pixels, in greyscale. So a
# picture is prepared as Fashion-MNIST's images were made from shop photos,
# in the steps its authors list (Xiao, Rasul and Vollgraf, 2017), here with
# torchvision's transforms, ``v2``:
# 1. trim the edges that have the colour of the corner pixels;
# 2. resize the longest edge to 28 pixels;
# 3. sharpen;
# 4. extend the shortest edge to 28 and put the image in the centre;
# 5. negate the intensities (only where the background is light);
# 6. convert to 8-bit greyscale.
# ``predict.png`` shows each picture beside the image that the model judges.
PICTURES_SHOWN = 12  # pictures that predict.png draws
LARGEST_SIDE = 1024  # larger pictures are reduced first, to bound the memory they take


def on_white(picture):
    """A C x H x W picture as floats in [0, 1] (to_dtype scales 0..255, or 0..65535), laid on white."""
    picture = v2.functional.to_dtype(picture, torch.float32, scale=True)
    if picture.shape[0] in (2, 4):  # the last channel is alpha, the opacity
        colour, alpha = picture[:-1], picture[-1:]
        picture = colour * alpha + (1 - alpha)  # opaque: the colour; transparent: white
    return picture


def prepare_picture(picture):
    """A C x H x W picture tensor as a Fashion-MNIST image: 1 x 28 x 28, in [0, 1]."""
    picture = on_white(picture)
    corners = picture[:, [0, 0, -1, -1], [0, -1, 0, -1]]  # C x 4: the four corner pixels
    background = corners.median(dim=1).values  # their median colour (median(dim) also gives .indices)
    # 1. Trim to the pixels that differ from the background by more than a JPEG file's noise.
    differs = (picture - background[:, None, None]).abs().amax(dim=0) > 0.1  # amax: max, without indices
    rows, cols = differs.nonzero(as_tuple=True)
    if len(rows):
        picture = picture[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    # 2. Resize the longest edge to 28 pixels, keeping the proportions (and at least one pixel).
    height, width = picture.shape[1:]
    longest = max(height, width)
    picture = v2.functional.resize(picture, [max(1, IMAGE_SIDE * height // longest),
                                             max(1, IMAGE_SIDE * width // longest)], antialias=True)
    # 3. Sharpen. The paper does not say how much: 2 agreed best with the originals when test images,
    #    made into photo-like files, were prepared back (as tests/test_tutorial.py does).
    picture = v2.functional.adjust_sharpness(picture.clamp(0, 1), sharpness_factor=2)
    # 4. Extend to 28 x 28 with the background's colour, centred as in the dataset: an odd margin's
    #    extra pixel goes left (or on top). This model is so sensitive to position that one pixel matters.
    height, width = picture.shape[1:]
    left, top = (IMAGE_SIDE + 1 - width) // 2, (IMAGE_SIDE + 1 - height) // 2
    picture = v2.functional.pad(picture, [left, top, IMAGE_SIDE - width - left, IMAGE_SIDE - height - top],
                                fill=background.tolist())
    # 5. Negate a light background, so that the garment is light on black.
    if background.mean() > 0.5:
        picture = 1 - picture
    # 6. Greyscale, in the 256 levels of an 8-bit file.
    grey = v2.functional.rgb_to_grayscale(picture) if picture.shape[0] == 3 else picture
    return (grey * 255).round() / 255


def top_classes(probabilities, k=3):
    """'Ankle boot 91%, Sneaker 6%, Sandal 2%': the ``k`` most probable classes."""
    values, indices = probabilities.topk(k)
    return ", ".join(f"{CLASSES[i]} {p:.0%}" for p, i in zip(values.tolist(), indices.tolist()))


def plot_pictures(names, pictures, prepared, probabilities):
    """For each picture: as given, as the model sees it, and the model's probabilities."""
    height = 1.9 * len(pictures) + 0.8  # in inches, as are the margins below
    fig, axes = plt.subplots(len(pictures), 3, figsize=(8, height), squeeze=False,
                             gridspec_kw={"width_ratios": [1.4, 1, 1.6]})
    fig.subplots_adjust(left=0.01, right=0.98, bottom=0.35 / height, top=1 - 0.8 / height, wspace=0.35, hspace=0.5)
    for (given_ax, seen_ax, bar_ax), name, picture, image, probs in zip(
            axes, names, pictures, prepared, probabilities):
        given_ax.imshow(on_white(picture).expand(3, -1, -1).permute(1, 2, 0).numpy())  # H x W x RGB
        given_ax.set_title(name, fontsize=9, parse_math=False)  # a "$" in a name is no formula
        seen_ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
        seen_ax.set_title("what the model sees", fontsize=9)
        for ax in (given_ax, seen_ax):
            ax.set_axis_off()
        draw_probabilities(bar_ax, probs)
    fig.suptitle("Your pictures, prepared as Fashion-MNIST's images were, and the model's probabilities",
                 y=1 - 0.15 / height)
    return fig


def classify_pictures(model, paths, out_dir, show=False):
    """Print the three most probable classes of each picture file, and draw predict.png."""
    pictures = [read_picture(path) for path in paths]  # the appendix: clear errors for bad files
    prepared = torch.stack([prepare_picture(picture) for picture in pictures])
    model.eval()
    probabilities = model.predict_proba(prepared.to(model.linear.weight.device)).cpu()
    for path, probs in zip(paths, probabilities):
        print(f"{path.name}: {top_classes(probs)}")
    shown = slice(0, PICTURES_SHOWN)
    save_figure(plot_pictures([path.name for path in paths[shown]], pictures[shown], prepared[shown],
                              probabilities[shown]), out_dir / "predict.png", show)
    if show:
        plt.show()
    return probabilities


# =============================================================================
# Appendix: the command line and the safety net
# =============================================================================
# Checked flags, an offline copy of the data, files never half-written, and Ctrl-C. A
# problem that a user can fix ends in one line on stderr and a non-zero exit status.
PROG = Path(__file__).name
HERE = Path(__file__).resolve().parent
DATA_DIR, OUT_DIR = HERE / "data", HERE / "outputs"  # the repository's own, wherever it runs from
FULL_TRAIN_SIZE = 60_000  # images in the training split
# The four original files' MD5 checksums. Debian's package dataset-fashion-mnist has gzipped copies,
# for machines without internet; decompressed under these names, torchvision takes them.
RAW_FILES = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
REINSTALL = "reinstall it with 'sudo apt-get install --reinstall dataset-fashion-mnist'"
RUN_FILES = ["samples.png", "model.pt", "loss.png", "accuracy.png", "predictions.png", "weights.png",
             "confusion.png", "metrics.json"]  # what run_tutorial() writes


def write_atomically(path, data):
    """Write ``data`` to a temporary file beside ``path``, then rename it: ``path`` is whole or as it was."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as error:  # name the file that was asked for, not the temporary one
        raise OSError(error.errno, error.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def prepare_data(data_dir):
    """Put the four original files into data_dir/FashionMNIST/raw: from Debian's copy, or downloaded."""
    raw_dir = Path(data_dir) / "FashionMNIST" / "raw"
    for name, md5 in RAW_FILES.items():
        path, copy = raw_dir / name, DEBIAN_DIR / f"{name}.gz"
        if not path.exists() and copy.exists():
            print(f"Decompressing {copy} into {raw_dir}")
            raw_dir.mkdir(parents=True, exist_ok=True)
            try:
                write_atomically(path, gzip.decompress(copy.read_bytes()))
            except (EOFError, zlib.error, gzip.BadGzipFile) as error:
                raise OSError(f"{copy} is damaged ({error}): {REINSTALL}") from None
            if not check_integrity(path, md5):
                path.unlink()
                raise OSError(f"{copy} does not decompress to the original file (its MD5 differs): {REINSTALL}")
    if not all((raw_dir / name).exists() for name in RAW_FILES):
        try:
            datasets.FashionMNIST(data_dir, download=True)
        except RuntimeError as error:  # torchvision's word for "could not download"
            raise OSError(f"Fashion-MNIST is not in {raw_dir} and could not be downloaded "
                          f"({str(error).strip().splitlines()[-1]}): connect to the internet, or install the "
                          f"offline copy with 'sudo apt-get install dataset-fashion-mnist'") from None
    for name, md5 in RAW_FILES.items():
        if not check_integrity(raw_dir / name, md5):
            raise OSError(f"{raw_dir / name} is damaged (its MD5 checksum is not the original's): "
                          f"delete it and run again")


def read_picture(path):
    """A picture file's first frame, turned as the camera meant, at most 1024 pixels a side: a 4 x H x W
    RGBA tensor, or 1 x H x W for 16-bit grey, which RGBA would clip to 8 bits."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow warns of damaged files and of decompression bombs: refuse them
            with Image.open(path) as image:
                if image.mode in ("I", "F"):
                    raise ValueError(f"its pixels are 32-bit numbers (mode {image.mode}) without a set range")
                image.thumbnail((LARGEST_SIDE, LARGEST_SIDE), reducing_gap=None)  # reduce() can't do 16 bits
                image = ImageOps.exif_transpose(image)
                picture = image if image.mode.startswith("I;16") else image.convert("RGBA")
    except (OSError, ValueError, SyntaxError, Warning, Image.DecompressionBombError) as error:
        if getattr(error, "errno", None):
            raise  # the OS's message (no such file, no permission...) names the file
        raise OSError(f"{path} is not a picture that Pillow can read: {error}") from None
    return v2.functional.pil_to_tensor(picture)


def load_trained_model(path, device):
    """load_model(), with one clear line for a model.pt that is missing, unreadable or damaged."""
    command = f"python {PROG} --out-dir {path.parent}"
    try:
        model = load_model(path, device)
    except FileNotFoundError:
        raise OSError(f"no trained model at {path} yet: train one first with '{command}'") from None
    except OSError:
        raise  # no permission, a folder: the OS's message says which
    except Exception as error:  # torch.load's errors depend on what the file holds
        reason = textwrap.shorten(str(error), 200) if zipfile.is_zipfile(path) else "not a file that torch.save wrote"
        raise OSError(f"{path} is not a model of this tutorial ({reason}): train one with '{command}'") from None
    if not all(tensor.isfinite().all() for tensor in model.state_dict().values()):
        raise OSError(f"{path} is damaged: its weights hold NaN or infinity; train a new one with '{command}'")
    return model


def claim_out_dir(out_dir, names):
    """Lock ``out_dir`` for this run (the OS ends the lock with the process) and check that no folder
    stands where a file goes. Returns the folder's file descriptor, which holds the lock."""
    out_dir.mkdir(parents=True, exist_ok=True)
    in_the_way = [name for name in names if (out_dir / name).is_dir()]
    if in_the_way:
        raise IsADirectoryError(f"{out_dir / in_the_way[0]} is a folder, where this run would write a file")
    folder = os.open(out_dir, os.O_RDONLY)
    try:
        if fcntl:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(folder)
        raise OSError(f"--out-dir {out_dir} is in use by another run: wait for it to end, "
                      f"or give this run another --out-dir") from None
    return folder


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, usage="%(prog)s [--predict IMAGE ...] [options]",
                                     description="Train a Softmax classifier on Fashion-MNIST, or classify pictures.")
    add = parser.add_argument
    add("--epochs", metavar="N", type=int, default=EPOCHS, help="passes over the training images (%(default)s)")
    add("--lr", type=float, default=LEARNING_RATE, help="learning rate of SGD (%(default)s)")
    add("--batch-size", metavar="N", type=int, default=BATCH_SIZE, help="images per step (%(default)s)")
    add("--shuffle", action="store_true", help="a new random order of the training images every epoch")
    add("--train-size", metavar="N", type=int, default=TRAIN_SIZE,
        help=f"the first N training images, validation included (%(default)s, at most {FULL_TRAIN_SIZE})")
    add("--val-size", metavar="N", type=int, default=VAL_SIZE, help="how many of them validate (%(default)s)")
    add("--seed", metavar="N", type=int, default=0, help="seed of the starting weights and of --shuffle (%(default)s)")
    add("--data-dir", metavar="DIR", type=Path, default=DATA_DIR, help="where Fashion-MNIST is kept (%(default)s)")
    add("--out-dir", metavar="DIR", type=Path, default=OUT_DIR,
        help="where the outputs go, and where --predict finds model.pt (%(default)s)")
    add("--device", default="cpu", help="where to train: cpu, or an accelerator such as cuda or cuda:1 (%(default)s)")
    add("--log-every", metavar="N", type=int, default=10, help="print progress every N epochs (%(default)s)")
    add("--show", action="store_true", help="also show the figures, in windows or in a notebook")
    add("--predict", metavar="IMAGE", nargs="+", type=Path, help="classify pictures with model.pt instead of training")
    args = parser.parse_args(argv)

    for flag in ("epochs", "batch_size", "log_every", "train_size", "val_size"):
        if getattr(args, flag) < 1:
            parser.error(f"argument --{flag.replace('_', '-')}: must be at least 1, not {getattr(args, flag)}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"argument --lr: must be a finite number above 0, not {args.lr}")
    if not 0 <= args.seed < 2**64:  # what torch.manual_seed takes
        parser.error(f"argument --seed: must be from 0 to 2**64 - 1, not {args.seed}")
    if args.train_size > FULL_TRAIN_SIZE:
        parser.error(f"argument --train-size: at most {FULL_TRAIN_SIZE}, not {args.train_size}")
    if args.val_size >= args.train_size:
        parser.error(f"argument --val-size: must be below --train-size ({args.train_size}), not {args.val_size}")
    if args.device != "cpu":
        try:
            torch.empty(0, device=args.device)  # PyTorch's check: a device it knows, on this machine
        except (RuntimeError, AssertionError, NotImplementedError) as error:
            parser.error(f"argument --device: cannot use {args.device} here ({str(error).splitlines()[0]})")
    return args


def main(argv=None):
    """Run the tutorial, or --predict, with the command line's flags; return the exit status."""
    try:
        args = parse_args(argv)
    except SystemExit as exit_:  # --help, or a bad flag: a notebook gets the status, not an exit
        return exit_.code
    if args.show and plt.get_backend().lower() in backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE):
        print("--show: no display here, so the figures are only saved.")
        args.show = False

    # Ctrl-C (SIGINT), `kill` (SIGTERM) and a closed terminal (SIGHUP) raise KeyboardInterrupt: in
    # training, fit() stops and the run goes on; elsewhere, or again, the run quits. nohup's stay ignored.
    received = []

    def interrupt(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    stop_signals = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {signum: signal.signal(signum, interrupt) for signum in stop_signals
                if signal.getsignal(signum) is not signal.SIG_IGN}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steps on 16 images are too small to share: one thread is faster
    lock = None
    try:
        if args.predict:
            lock = claim_out_dir(args.out_dir, ["predict.png"])
            classify_pictures(load_trained_model(args.out_dir / "model.pt", args.device), args.predict,
                              args.out_dir, args.show)
        else:
            prepare_data(args.data_dir)
            lock = claim_out_dir(args.out_dir, RUN_FILES)
            print(f"Figures, model.pt and metrics.json go to {args.out_dir.resolve()}")
            run_tutorial(args)  # samples.png, written before training, shows that the folder takes files
        if sys.stdout:  # None when the shell closed it (`>&-`)
            sys.stdout.flush()  # so that a closed pipe shows here, not at exit
    except (OSError, FloatingPointError) as error:
        if isinstance(error, BrokenPipeError):  # `| head` has stopped reading: end quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        else:
            print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        signum = received[-1] if received else signal.SIGINT
        print(f"\nInterrupted by {signal.Signals(signum).name}.", file=sys.stderr)
        return 128 + signum
    finally:
        if lock is not None:
            os.close(lock)
        torch.set_num_threads(threads)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 + received[0] if received else 0  # 130 after Ctrl-C, as shells report


if __name__ == "__main__":
    sys.exit(main())
