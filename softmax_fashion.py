"""
A Softmax classifier for Fashion-MNIST images, in PyTorch
=========================================================

One linear layer scores each class, and the softmax turns the scores into
probabilities. This rebuilds "Building a Softmax Classifier for Images in
PyTorch" (Machine Learning Mastery), "the original", with its data, model and
settings. Read it with the README, in two sittings: sections 1 to 4, the
original's lesson, then 5 to 7. The appendices (A draws the figures, B holds
the command line and the safety net) are on no reading path.

PyTorch for a NumPy user: a tensor is PyTorch's array. It indexes, slices and
broadcasts as a NumPy array does, and ``t.numpy()`` makes it one. NumPy's
axis is PyTorch's dimension, ``dim``: ``t.sum(dim=1)`` is ``a.sum(axis=1)``,
``t.unsqueeze(0)`` is ``np.expand_dims(a, 0)``, and ``t.item()`` is the
number in a one-element tensor. A tensor lives on a device, "cpu" or a GPU
such as "cuda", and ``t.to(device)`` moves it. New:
- ``requires_grad``: a tensor so marked (the model's weights, which
  ``model.parameters()`` lists) makes PyTorch record each computation with it.
- ``loss.backward()`` works back through that record and adds to each
  weight's ``.grad`` its gradient: how fast the loss grows with that weight.
  This is autograd, PyTorch's automatic differentiation.
- ``torch.no_grad()``, as a ``with`` block or a decorator on a function,
  turns the recording off where we only evaluate, saving time and memory.
"""

import io
import math
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn
from torchvision import datasets
from torchvision.transforms import v2

# Only the appendices use these.
import argparse
import gzip
import itertools
import json
import os
import signal
import sys
import textwrap
import time
import warnings
import zipfile
import zlib

from filelock import FileLock, Timeout
from matplotlib import font_manager
from PIL import Image, ImageOps
from torchvision.datasets.utils import check_integrity

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
# validate.

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",  # classes 0 to 9
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IMAGE_SIDE = 28
TRAIN_SIZE, VAL_SIZE = 4000, 500  # the images kept, and how many of them validate


def load_fashion_mnist(data_dir, train=True, count=None):
    """The first ``count`` images (all if None) of the training or the test split, and their labels."""
    dataset = datasets.FashionMNIST(data_dir, train=train, download=True)  # downloads only once
    images = dataset.data[:count]     # N x 28 x 28 whole numbers, from 0 (black) to 255 (white)
    labels = dataset.targets[:count]  # N class numbers, 0 to 9
    # Floats in [0, 1]; flatten(start_dim=1) lays each image out in a row of 784.
    return images.flatten(start_dim=1).float() / 255, labels


def train_val_split(images, labels, val_size=VAL_SIZE):
    """((train images, train labels), (validation images, validation labels)), in dataset order."""
    n_train = len(images) - val_size
    return (images[:n_train], labels[:n_train]), (images[n_train:], labels[n_train:])


# =============================================================================
# 2. Build the model
# =============================================================================
# A linear layer computes each output as a weighted sum of its inputs plus a
# bias. Ours turns an image's 784 pixel values x into ten class scores, the
# logits (nn.Linear keeps a row of weights per output, hence the .T):
#
#     logits = x @ weight.T + bias        (weight: 10 x 784, bias: 10)
#
# Row i of ``weight`` is class i's template, a weight per pixel: an image
# scores high where its light pixels meet large weights (``weights.png``
# draws them). nn.Linear starts them at random, within 1/sqrt(784) = 0.036 of
# 0; ``torch.manual_seed`` fixes which.
#
# Worked by hand, for three classes: logits z = (2, 1, 0), true class y = 0.
# - Softmax: p = exp(z) / sum(exp(z)). Subtracting the largest logit first
#   divides the top and the bottom by the same exp(2), so p stays, and exp
#   cannot overflow: exp(z - 2) = (1, 0.368, 0.135), summing to 1.503, so
#   p = (0.665, 0.245, 0.090).
# - Cross-entropy loss: -log p[y] = -log 0.665 = 0.41 (log is the natural log):
#   near 0 when the true class gets a probability near 1, large when it gets
#   little.
# - The gradient g[i]: how fast the loss grows with z[i]. Three facts of
#   calculus give it: exp's derivative is exp; log's, at s, is 1 / s; and
#   rates multiply along the way (the chain rule). With s = sum(exp(z)):
#       loss = log(s) - z[y]                   as -log(exp(z[y]) / s) = log s - z[y]
#       s grows with z[i] by exp(z[i])
#       log(s) grows by that over s: p[i]
#       z[y] grows with z[i] by one_hot(y)[i]  1 if i = y, else 0
#   so g = p - one_hot(y), here (-0.335, 0.245, 0.090).
# - The weights: logit i = weight[i] . x + bias[i] (. is the dot product) grows
#   by x[j] with weight[i, j], so the loss by g[i] * x[j]: row i of weight.grad
#   is g[i] * x, and bias.grad is g.
# - A step (section 3) subtracts lr, the learning rate, times the gradient. As
#   g[y] = p[y] - 1, row y gains lr * (1 - p[y]) * x: the true class's template
#   moves towards the image. Each other row i loses lr * p[i] * x.
# No calculus? Take it on trust: section 5 checks it on a real image against
# PyTorch's autograd.
#
# Where is the softmax? ``forward`` returns logits: the loss function
# (``nn.CrossEntropyLoss``, section 3) applies the softmax itself, as log p[y]
# = z[y] - log(sum(exp(z))): p[y] can round to 0, and log 0 is -inf.
# ``predict_proba`` applies it for probabilities.


class SoftmaxClassifier(nn.Module):
    def __init__(self, n_inputs=IMAGE_SIDE * IMAGE_SIDE, n_classes=len(CLASSES)):
        super().__init__()  # lets nn.Module keep track of the layers added below
        self.linear = nn.Linear(n_inputs, n_classes)

    def forward(self, images):
        """Logits, N x 10, for N images: rows of 784 pixels, or 28 x 28 pictures, flattened here."""
        return self.linear(images.flatten(start_dim=1))

    @torch.no_grad()
    def predict_proba(self, images):
        """Class probabilities, N x 10, each row adding up to 1."""
        return torch.softmax(self(images), dim=1)  # calling a module runs its forward()


# =============================================================================
# 3. Train the model
# =============================================================================
LEARNING_RATE, BATCH_SIZE, EPOCHS = 0.01, 16, 200  # the original's settings, the flags' defaults
# Training takes steps of stochastic gradient descent (SGD), each on a batch
# of 16 images: clear the old gradients (``backward`` adds to ``.grad``),
# compute the batch's mean loss from its logits and labels (class numbers), let
# ``backward`` compute the gradients, and step: ``optimizer.step()`` does
# weight -= lr * weight.grad, the learning rate lr = 0.01 setting the step's
# size. Stochastic: each step's gradient comes from a sample of the data, not
# all of it. Each epoch takes the images in the same order, as the original
# does (``--shuffle`` changes that). ``images.split(16)`` cuts the batches, the
# last one smaller (3,500 = 218 x 16 + 12); NumPy's split takes the number of
# pieces instead. For data that is not one tensor, PyTorch's ``DataLoader``
# cuts them.
#
# ``model.train()`` and ``model.eval()`` switch layers that act otherwise in
# training, such as dropout (which zeroes random inputs, in training only).
# This model has none, but every loop should call them.


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
    loss = nn.functional.cross_entropy(logits, labels)
    return predicted, accuracy, loss.item()


def fit(model, train_data, val_data, epochs=EPOCHS, lr=LEARNING_RATE, batch_size=BATCH_SIZE, by_hand=False,
        generator=None, log_every=10):
    """Train ``model`` on (images, labels) pairs; return each epoch's training loss and validation accuracy.
    Ctrl-C stops training; the model keeps what it learned."""
    loss_fn = nn.CrossEntropyLoss()  # softmax, then -log p[y], averaged over the batch
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    history = {"train_loss": [], "val_accuracy": []}
    try:
        for epoch in range(epochs):
            batches = make_batches(*train_data, batch_size, generator)
            if by_hand:  # section 5's steps, by hand
                train_loss = train_epoch_by_hand(model, batches, lr)
            else:
                train_loss = train_epoch(model, batches, loss_fn, optimizer)
            _, val_accuracy, _ = evaluate(model, *val_data)
            history["train_loss"].append(train_loss)
            history["val_accuracy"].append(val_accuracy)
            if epoch % log_every == 0 or epoch == epochs - 1:
                print(f"Epoch: {epoch}. Loss: {train_loss:.4f}. Accuracy: {val_accuracy:.1f}", flush=True)
            if not math.isfinite(train_loss):  # steps too large overshoot, and the loss overflows
                raise FloatingPointError(f"the training loss became {train_loss} in epoch {epoch}: "
                                         f"the learning rate {lr:g} is too high, try a smaller one")
    except KeyboardInterrupt:
        print(f"Interrupted in epoch {len(history['train_loss'])}: training stops here.", flush=True)
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
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    return fig


def save_figure(fig, path, show=False):
    """Save ``fig`` as a PNG file; close it unless it is to be shown."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    write_atomically(path, buffer.getvalue())  # appendix B: written whole or not at all
    if not show:
        plt.close(fig)
    print(f"Saved {Path(path).name}")


# The first sitting ends here, with the original's lesson. Section 6 wires it
# up (torch.manual_seed, SoftmaxClassifier(), fit, the plots). Back to the
# README: its figures, then exercises that check you can write it yourself.


# =============================================================================
# 5. Beyond the original: by hand, test set, confusions, saving
# =============================================================================
# ``follow_one_image`` works section 2's example on a real image and checks it
# against PyTorch. ``train_epoch_by_hand`` trains with those gradients.


def follow_one_image(model, image, label):
    """Print one image's logits, softmax, loss and gradient, computed by hand and checked against PyTorch."""
    # unsqueeze(0): a batch of one image; [0]: its row. detach() drops the model's record; requires_grad_()
    # (the _ says in place) starts one here, so that backward() puts the loss's gradient in logits.grad.
    logits = model(image.unsqueeze(0))[0].detach().requires_grad_()
    torch_loss = nn.functional.cross_entropy(logits.unsqueeze(0), label.unsqueeze(0))  # what nn.CrossEntropyLoss does
    torch_loss.backward()
    with torch.no_grad():
        shifted = logits - logits.max()  # z - max(z), as in section 2
        probabilities = shifted.exp() / shifted.exp().sum()
        loss = shifted.exp().sum().log() - shifted[label]  # log(sum(exp(z))) - z[y], both shifted
        gradient = probabilities - nn.functional.one_hot(label, len(CLASSES))
        # assert_close raises, showing the numbers, where they differ beyond rounding.
        torch.testing.assert_close(probabilities, torch.softmax(logits, dim=0))
        torch.testing.assert_close(loss, torch_loss)
        torch.testing.assert_close(gradient, logits.grad)

    def row(values):
        return " ".join(f"{value:7.2f}" for value in values.tolist())
    y = label.item()
    print(f"One validation image, a {CLASSES[y]} (class {y}), by hand; PyTorch's numbers are the same:")
    print(f"  logits z               {row(logits)}")
    print(f"  softmax p              {row(probabilities)}")
    print(f"  loss -log p[{y}] = -log {probabilities[y]:.3f} = {loss:.3f}")
    print(f"  gradient p - one_hot   {row(gradient)}")


@torch.no_grad()  # -= changes a weight in place, which autograd refuses while it records
def train_epoch_by_hand(model, batches, lr):
    """train_epoch's steps (section 3) with section 2's gradients, not autograd and an optimizer: the same
    weights, in less than half the time."""
    model.train()
    weight, bias = model.linear.weight, model.linear.bias
    total_loss, seen = 0.0, 0
    for images, labels in batches:
        logits = model(images)
        # g, N x 10: each image's p - one_hot(y), over N, as the loss is the batch's mean
        g = (torch.softmax(logits, dim=1) - nn.functional.one_hot(labels, len(CLASSES))) / len(labels)
        weight -= lr * g.T @ images  # row i sums g[n, i] * image n: autograd's weight.grad
        bias -= lr * g.sum(dim=0)
        total_loss += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        seen += len(labels)
    return total_loss / seen


# Chance moves an accuracy p on n images by about sqrt(p(1 - p) / n) (its
# standard deviation): 1.6 points on 500, 0.4 on 10,000. And a validation
# accuracy used to choose settings (as in the README's exercise 4) ends up
# optimistic. So the 10,000 test images, used only here, give the final score.


def confusion_matrix(labels, predicted, n_classes=len(CLASSES)):
    """counts[i, j]: how many images of class i were predicted as class j."""
    # Each (true, predicted) pair as one number: a Shirt (6) taken for a T-shirt/top (0) is 60. bincount
    # counts each number from 0 to 99; reshaped to 10 x 10, count 60 lands in row 6, column 0.
    pairs = labels * n_classes + predicted
    return torch.bincount(pairs, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def save_model(model, path):
    """Save the learned tensors, the state_dict; the class itself is in this file."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    write_atomically(path, buffer.getvalue())  # appendix B: written whole or not at all


def load_model(path, device="cpu"):
    """A new SoftmaxClassifier with the weights saved in ``path``, on ``device``."""
    model = SoftmaxClassifier()
    # map_location: onto ``device``, wherever they were saved from. weights_only: tensors only, as a .pt file
    # can also hold code, which loading would run.
    model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return model.to(device)


# =============================================================================
# 6. Putting it together
# =============================================================================
# Sections 1 to 5 in order, with the command line's flags in ``settings`` and
# appendix A's figures. The model is saved right after training. Paths join
# with /.


def run_tutorial(settings):
    """Train, plot and save; return fit()'s history and the test results."""
    out, show = settings.out_dir, settings.show
    device = torch.device(settings.device)

    # 1. Prepare the data (the test images are for section 5).
    images, labels = load_fashion_mnist(settings.data_dir, count=settings.train_size)
    test_images, test_labels = load_fashion_mnist(settings.data_dir, train=False)
    (train_images, train_labels), (val_images, val_labels) = train_val_split(images, labels, settings.val_size)
    print(f"Images: {len(train_images):,} to train, {len(val_images):,} to validate, "
          f"{len(test_images):,} to test, each a row of {train_images.shape[1]} pixels")
    # The first ten training images: at 28 x 28, some classes look alike.
    samples = plot_ten(train_images[:10], [CLASSES[label] for label in train_labels[:10]],
                       "The first 10 Fashion-MNIST training images", cmap="gray")
    save_figure(samples, out / "samples.png", show)

    # 2. Build the model. Seeding first fixes its random starting weights.
    torch.manual_seed(settings.seed)
    model = SoftmaxClassifier().to(device)
    print(model, {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}, sep="\n")

    # 3. Train the model, then save it at once.
    train_data = train_images.to(device), train_labels.to(device)
    val_images, val_labels = val_images.to(device), val_labels.to(device)
    shuffler = torch.Generator().manual_seed(settings.seed) if settings.shuffle else None  # a new order each epoch
    history = fit(model, train_data, (val_images, val_labels), epochs=settings.epochs, lr=settings.lr,
                  batch_size=settings.batch_size, by_hand=settings.by_hand, generator=shuffler,
                  log_every=settings.log_every)
    save_model(model, out / "model.pt")
    print("Saved model.pt")
    model.eval()  # from here on the model only predicts
    follow_one_image(model, val_images[0], val_labels[0])  # section 5's check of section 2

    # 4. Plot the results.
    save_figure(plot_curve(history["train_loss"], "mean cross-entropy loss", "Training loss per epoch"),
                out / "loss.png", show)
    save_figure(plot_curve(history["val_accuracy"], "accuracy (%)",
                           f"Validation accuracy per epoch ({len(val_images)} images)"), out / "accuracy.png", show)

    # 5. Beyond the original.
    test_images, test_labels = test_images.to(device), test_labels.to(device)
    predicted, test_accuracy, test_loss = evaluate(model, test_images, test_labels)
    counts = confusion_matrix(test_labels, predicted).cpu()
    per_class = 100 * counts.diagonal() / counts.sum(dim=1)  # per true class: right answers over images
    print(f"Test set ({len(test_labels):,} images): accuracy {test_accuracy:.1f}%, mean loss {test_loss:.4f}")
    print("  per class: " + ", ".join(f"{name} {accuracy:.0f}%" for name, accuracy in zip(CLASSES, per_class)))
    probabilities = model.predict_proba(test_images[:12])
    # The first 12 test images beside their probabilities: how sure is the model, and of what?
    save_figure(plot_predictions(test_images[:12], test_labels[:12], probabilities), out / "predictions.png", show)
    # Each class's weights as a 28 x 28 template: red where a light pixel raises its score, blue lowers it.
    save_figure(plot_weights(model.linear.weight), out / "weights.png", show)
    # The confusion matrix: right answers on its diagonal; elsewhere, which classes are taken for which.
    save_figure(plot_confusion(counts), out / "confusion.png", show)
    reloaded_predicted, _, _ = evaluate(load_model(out / "model.pt", device), test_images, test_labels)
    print(f"Loaded model.pt into a new model: it predicts the same test classes: "
          f"{torch.equal(reloaded_predicted, predicted)}")
    return {**history, "test_accuracy": test_accuracy, "test_loss": test_loss}


# =============================================================================
# 7. Use the model
# =============================================================================
# A trained model is for new pictures. But it knows only centred garments,
# light on black, 28 x 28 pixels, in greyscale. So a picture is prepared as
# Fashion-MNIST's images were made from shop photos, in the six steps that its
# authors list (Xiao, Rasul and Vollgraf, 2017), with torchvision's transforms
# (``v2``). ``read_picture`` (appendix B) gives a picture file as a 3 x H x W
# tensor (colour channels first, PyTorch's order) of whole numbers, 0 to 255.


def prepare_picture(picture):
    """A picture tensor, C x H x W (C: 1 grey or 3 colours), as a Fashion-MNIST image: 1 x 28 x 28, in [0, 1]."""
    picture = v2.functional.to_dtype(picture, torch.float32, scale=True)  # 0..255 to 0..1; floats stay
    corners = torch.stack([picture[:, 0, 0], picture[:, 0, -1], picture[:, -1, 0], picture[:, -1, -1]])
    # Given a dim, median (as max) returns the values and their indices: take .values.
    background = corners.median(dim=0).values  # the median colour of the four corners: C numbers
    # 1. Trim the edges that have the background's colour, give or take a JPEG file's noise. view(-1, 1, 1)
    #    makes it C x 1 x 1, to broadcast over the pixels; torch.where, as np.where, gives the True ones.
    differs = (picture - background.view(-1, 1, 1)).abs().max(dim=0).values > 0.1
    rows, cols = torch.where(differs)
    if len(rows):
        picture = picture[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    # 2. Resize the longest edge to 28 pixels, keeping the proportions.
    height, width = picture.shape[1:]
    longest = max(height, width)
    picture = v2.functional.resize(picture, [max(1, IMAGE_SIDE * height // longest),
                                             max(1, IMAGE_SIDE * width // longest)], antialias=True)
    # 3. Sharpen, by 2: of the factors tried, 2 best restored test images that had been enlarged like photos.
    picture = v2.functional.adjust_sharpness(picture.clamp(0, 1), sharpness_factor=2)
    # 4. Extend to 28 x 28 with the background, centred as in the dataset: an odd margin's extra pixel goes
    #    left (or on top), so 21 pixels wide gets 4 left and 3 right.
    height, width = picture.shape[1:]
    left, top = (IMAGE_SIDE - width + 1) // 2, (IMAGE_SIDE - height + 1) // 2
    picture = v2.functional.pad(picture, [left, top, IMAGE_SIDE - width - left, IMAGE_SIDE - height - top],
                                fill=background.tolist())
    # 5. Where the background is light, negate: the garment becomes light on black.
    if background.mean() > 0.5:
        picture = 1 - picture
    # 6. Convert to greyscale, in the 256 levels of an 8-bit file.
    grey = v2.functional.rgb_to_grayscale(picture) if picture.shape[0] == 3 else picture
    return (grey * 255).round() / 255


def classify_picture(model, picture):
    """(the prepared 1 x 28 x 28 image, its ten class probabilities) for a picture tensor."""
    image = prepare_picture(picture)
    model.eval()
    return image, model.predict_proba(image.unsqueeze(0))[0]  # a batch of one image, and its one row


def top_classes(probabilities, k=3):
    """'Ankle boot 91%, Sneaker 6%, Sandal 2%': the ``k`` most probable classes."""
    values, indices = probabilities.topk(k)
    return ", ".join(f"{CLASSES[i]} {p:.0%}" for p, i in zip(values.tolist(), indices.tolist()))


# The second sitting ends here: back to the README.


# =============================================================================
# Appendix A: drawing the figures
# =============================================================================
# Grids of pictures, probability bars and colour bars.


def as_pictures(rows):
    """Rows of 784 numbers as 28 x 28 NumPy arrays (detach(): without autograd's record)."""
    return rows.detach().cpu().reshape(-1, IMAGE_SIDE, IMAGE_SIDE).numpy()


def plot_ten(rows, titles, suptitle, **imshow_args):
    """Ten rows of 784 numbers as 28 x 28 pictures, with titles."""
    fig, axes = plt.subplots(2, 5, figsize=(10, 4.6))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.85, hspace=0.25)
    for ax, picture, title in zip(axes.flat, as_pictures(rows), titles):
        ax.imshow(picture, **imshow_args)
        ax.set_title(title)
        ax.set_axis_off()
    fig.suptitle(suptitle)
    return fig


def plot_weights(weight):
    """The weights as ten 28 x 28 images, on one colour scale centred at 0."""
    limit = weight.abs().max().item()
    fig = plot_ten(weight, CLASSES, "Learned weights per class: red where a light pixel raises the class's score, "
                   "blue where it lowers it", cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.subplots_adjust(right=0.86)  # room for the colour bar
    fig.colorbar(fig.axes[0].images[0], cax=fig.add_axes((0.89, 0.1, 0.02, 0.68)), label="weight")
    return fig


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
    height = 2.3 * n_rows + 0.6  # in inches, as are the margins below
    fig, axes = plt.subplots(n_rows, 2 * per_row, figsize=(13, height), width_ratios=[1, 1.5] * per_row)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.4 / height, top=1 - 0.7 / height, wspace=0.45, hspace=0.45)
    for image_ax, bar_ax, picture, label, probs in zip(axes.flat[0::2], axes.flat[1::2], as_pictures(images),
                                                        labels.tolist(), probabilities.cpu()):
        guess = probs.argmax().item()
        image_ax.imshow(picture, cmap="gray")
        image_ax.set_axis_off()
        image_ax.set_title(f"{CLASSES[guess]} {probs[guess].item():.0%}\n(true: {CLASSES[label]})",
                           color="tab:red" if guess != label else "black", fontsize=9)
        draw_probabilities(bar_ax, probs, label)
    fig.suptitle("The first test images' predicted probabilities: blue is the true class, red a wrong guess")
    return fig


def plot_confusion(counts):
    total, correct = counts.sum().item(), counts.diagonal().sum().item()
    fig, ax = plt.subplots(figsize=(7.5, 6.6))
    fig.subplots_adjust(left=0.2, right=0.98, bottom=0.2, top=0.93)
    ax.imshow(counts.numpy(), cmap="Blues")
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set(xlabel="predicted class", ylabel="true class")
    dark = counts.max().item() / 2
    for i, row in enumerate(counts.tolist()):
        for j, count in enumerate(row):
            ax.text(j, i, count, ha="center", va="center", fontsize=8, color="white" if count > dark else "black")
    ax.set_title(f"Confusion matrix on {total:,} test images (accuracy {100 * correct / total:.1f}%)")
    return fig


def plot_pictures(shown):
    """Rows of (name, picture, image, probabilities): as given, as the model sees it, and the bars."""
    fig, axes = plt.subplots(len(shown), 3, figsize=(8, 1.9 * len(shown) + 0.8), squeeze=False, layout="constrained",
                             width_ratios=[1.4, 1, 1.6])
    font = font_manager.get_font(font_manager.findfont(font_manager.FontProperties()))  # the titles' font
    for (given_ax, seen_ax, bar_ax), (name, picture, image, probs) in zip(axes, shown):
        given_ax.imshow(picture.permute(1, 2, 0).numpy())  # H x W x RGB, as matplotlib takes it
        name = "".join(c if font.get_char_index(ord(c)) else "?" for c in name)  # "?" where a glyph is missing
        given_ax.set_title(name, fontsize=9, parse_math=False)  # a "$" in a name is no formula
        seen_ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
        seen_ax.set_title("what the model sees", fontsize=9)
        for ax in (given_ax, seen_ax):
            ax.set_axis_off()
        draw_probabilities(bar_ax, probs)
    fig.suptitle("Your pictures, prepared as Fashion-MNIST's images were, and the model's probabilities")
    return fig


# =============================================================================
# Appendix B: the command line and the safety net
# =============================================================================
# A problem that a user can fix ends in one line and a non-zero exit status.
PROG = Path(__file__).name
HERE = Path(__file__).resolve().parent
DATA_DIR, OUT_DIR = HERE / "data", HERE / "outputs"  # beside the script, wherever it runs from
FULL_TRAIN_SIZE = 60_000
# MD5 checksums of the original files, which Debian's dataset-fashion-mnist holds gzipped.
RAW_FILES = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
REINSTALL = "reinstall it with 'sudo apt-get install --reinstall dataset-fashion-mnist'"
RUN_FILES = ["samples.png", "model.pt", "loss.png", "accuracy.png", "predictions.png", "weights.png",
             "confusion.png", "metrics.json"]  # what a run writes
LOCK_FILE = ".lock"  # in --out-dir: one run at a time
PICTURES_SHOWN = 12  # pictures that predict.png draws, the only ones kept in memory
LARGEST_SIDE = 1024  # larger pictures are reduced first


def write_atomically(path, data):
    """Write ``data`` to a temporary file, then rename it: ``path`` is whole, or as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_bytes(data)
        replace_when_free(tmp, path)
    except OSError as error:  # name ``path``, not the temporary file
        raise OSError(error.errno, error.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def replace_when_free(tmp, path):
    """os.replace(), waiting while another program holds ``path`` open, where Windows refuses it."""
    for attempt in itertools.count():
        try:
            return os.replace(tmp, path)
        except PermissionError as error:
            if not getattr(error, "winerror", None):  # not Windows: a real lack of permission
                raise
            if attempt == 10:  # a virus scan lets go within a second, an image viewer once closed
                print(f"{PROG}: {path} is open in another program: close it, and the run goes on "
                      f"(or press Ctrl-C to quit)", file=sys.stderr, flush=True)
            time.sleep(0.1)


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
        except RuntimeError as error:  # torchvision's "could not download"
            raise OSError(f"Fashion-MNIST is not in {raw_dir} and could not be downloaded "
                          f"({str(error).strip().splitlines()[-1]}): connect to the internet, or install the "
                          f"offline copy with 'sudo apt-get install dataset-fashion-mnist'") from None
    for name, md5 in RAW_FILES.items():
        if not check_integrity(raw_dir / name, md5):
            raise OSError(f"{raw_dir / name} is damaged (its MD5 checksum is not the original's): "
                          f"delete it and run again")


def save_metrics(settings, results):
    """Write metrics.json: the flags, each epoch's numbers, the test results."""
    epochs_run = len(results["train_loss"])
    record = {"settings": vars(settings), "epochs_run": epochs_run, "interrupted": epochs_run < settings.epochs,
              **results, "torch_version": torch.__version__}
    # default=str writes paths as text; allow_nan=False keeps it strict JSON.
    text = json.dumps(record, indent=2, default=str, allow_nan=False)
    write_atomically(settings.out_dir / "metrics.json", text.encode())
    print("Saved metrics.json")


def read_picture(path):
    """A picture file's first frame as an RGB tensor of whole numbers 0 to 255, 3 x H x W: turned upright,
    transparent parts white, at most LARGEST_SIDE pixels a side."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow warns of damaged files and decompression bombs: refuse them
            with Image.open(path) as image:
                if image.mode in ("I", "F"):
                    raise ValueError(f"its pixels are 32-bit numbers (mode {image.mode}) without a set range")
                image.thumbnail((LARGEST_SIDE, LARGEST_SIDE), reducing_gap=None)  # reduce() can't do 16 bits
                image = ImageOps.exif_transpose(image)
                if image.mode.startswith("I;16"):  # 16-bit grey: convert() would clip it, not scale it
                    image = image.convert("I").point(lambda value: value / 257).convert("L")
                picture = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    except (OSError, ValueError, SyntaxError, Warning, Image.DecompressionBombError) as error:
        if getattr(error, "errno", None):
            raise  # the OS's own message names the file
        raise OSError(f"{path} is not a picture that Pillow can read: {error}") from None
    return v2.functional.pil_to_tensor(picture.convert("RGB"))


def picture_files(paths):
    """The files given, each folder replaced by its picture files in name order (hidden ones left out)."""
    extensions = Image.registered_extensions()  # those that Pillow reads: not desktop.ini, Thumbs.db, ...
    for path in paths:
        if path.is_dir():
            yield from sorted((file for file in path.iterdir() if file.is_file() and not file.name.startswith(".")
                               and file.suffix.lower() in extensions), key=lambda file: file.name)
        else:
            yield path


def predict(model, paths, out_dir, show=False):
    """Print each picture's likeliest classes, and draw the first in predict.png; return 1 if a file could
    not be read, else 0."""
    shown, failed = [], 0
    for path in picture_files(paths):
        try:
            picture = read_picture(path)
        except OSError as error:
            print(f"{PROG}: error: {error}", file=sys.stderr, flush=True)
            failed += 1
            continue
        image, probabilities = classify_picture(model, picture)
        # A name that is not UTF-8 holds stand-ins for its bytes: print "\ufffd".
        name = path.name.encode(errors="surrogateescape").decode(errors="replace")
        print(f"{name}: {top_classes(probabilities)}", flush=True)
        if len(shown) < PICTURES_SHOWN:
            shown.append((name, picture, image, probabilities))
    if shown:
        save_figure(plot_pictures(shown), out_dir / "predict.png", show)
    elif not failed:
        raise OSError(f"no picture files in {', '.join(map(str, paths))}")
    return 1 if failed else 0


def load_trained_model(path):
    """load_model(), with one line for a missing, unreadable or damaged model.pt."""
    command = f"python {PROG} --out-dir {path.parent}"
    try:
        model = load_model(path)
    except FileNotFoundError:
        raise OSError(f"no trained model at {path} yet: train one first with '{command}'") from None
    except OSError:
        raise  # the OS's own message says what
    except Exception as error:  # torch.load's errors vary with the file
        reason = textwrap.shorten(str(error), 200) if zipfile.is_zipfile(path) else "not a file that torch.save wrote"
        raise OSError(f"{path} is not a model of this tutorial ({reason}): train one with '{command}'") from None
    if not all(tensor.isfinite().all() for tensor in model.state_dict().values()):
        raise OSError(f"{path} is damaged: its weights hold NaN or infinity; train a new one with '{command}'")
    return model


def claim_out_dir(out_dir, names):
    """Lock ``out_dir`` for this run, once no folder stands where a file goes; return the lock."""
    out_dir.mkdir(parents=True, exist_ok=True)
    in_the_way = [name for name in names if (out_dir / name).is_dir()]
    if in_the_way:
        raise IsADirectoryError(f"{out_dir / in_the_way[0]} is a folder, where this run would write a file")
    lock = FileLock(out_dir / LOCK_FILE)  # the OS holds the lock: a file left behind locks nothing
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise OSError(f"--out-dir {out_dir} is in use by another run: wait for it to end, "
                      f"or give this run another --out-dir") from None
    return lock


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, usage="%(prog)s [--predict IMAGE ...] [options]",
                                     description="Train a Softmax classifier on Fashion-MNIST, or classify pictures.")
    add = parser.add_argument
    add("--epochs", metavar="N", type=int, default=EPOCHS, help="passes over the training images (%(default)s)")
    add("--lr", type=float, default=LEARNING_RATE, help="learning rate of SGD (%(default)s)")
    add("--batch-size", metavar="N", type=int, default=BATCH_SIZE, help="images per step (%(default)s)")
    add("--shuffle", action="store_true", help="shuffle the training images every epoch")
    add("--by-hand", action="store_true", help="train without autograd or an optimizer (section 5)")
    add("--train-size", metavar="N", type=int, default=TRAIN_SIZE, help="the first N training images (%(default)s)")
    add("--val-size", metavar="N", type=int, default=VAL_SIZE, help="how many of them validate (%(default)s)")
    add("--seed", metavar="N", type=int, default=0, help="seed of the starting weights and of --shuffle (%(default)s)")
    add("--data-dir", metavar="DIR", type=Path, default=DATA_DIR, help="where Fashion-MNIST is kept (%(default)s)")
    add("--out-dir", metavar="DIR", type=Path, default=OUT_DIR, help="where outputs and model.pt go (%(default)s)")
    add("--device", default="cpu", help="where to train: cpu, or a GPU: cuda, cuda:1... (%(default)s)")
    add("--log-every", metavar="N", type=int, default=10, help="print progress every N epochs (%(default)s)")
    add("--show", action="store_true", help="also show the figures (in windows, or a notebook)")
    add("--predict", metavar="IMAGE", nargs="+", type=Path, help="classify pictures, or folders of them, instead")
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
            torch.empty(0, device=args.device)  # PyTorch's own check
        except (RuntimeError, AssertionError, NotImplementedError) as error:
            parser.error(f"argument --device: cannot use {args.device} here ({str(error).splitlines()[0]})")
    return args


def main(argv=None):
    """Run the tutorial, or --predict; return the exit status."""
    if hasattr(sys.stdout, "reconfigure"):  # a terminal or a file (not a notebook, nor None after `>&-`)
        sys.stdout.reconfigure(errors="backslashreplace")  # Windows' code pages lack most characters
    try:
        args = parse_args(argv)
    except SystemExit as exit_:  # --help or a bad flag: a notebook gets the status
        return exit_.code
    if args.show and plt.get_backend().lower() == "agg":  # as where there is no display
        print("--show: no display here, so the figures are only saved.")
        args.show = False

    # SIGINT (Ctrl-C), SIGTERM (`kill`), SIGHUP (a closed terminal) and SIGBREAK (Windows' Ctrl-Break, a closed
    # console) raise KeyboardInterrupt: in training, fit() stops and the run goes on; elsewhere, or again, it
    # quits. Signals that nohup ignores stay ignored.
    received = []

    def interrupt(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt
    signals = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK") if hasattr(signal, name)]
    previous = {s: signal.signal(s, interrupt) for s in signals if signal.getsignal(s) is not signal.SIG_IGN}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steps on 16 images are too small to share: one thread is faster
    lock, status = None, 0
    try:
        if args.predict:
            lock = claim_out_dir(args.out_dir, ["predict.png"])
            status = predict(load_trained_model(args.out_dir / "model.pt"), args.predict, args.out_dir, args.show)
        else:
            prepare_data(args.data_dir)
            lock = claim_out_dir(args.out_dir, RUN_FILES)
            print(f"Figures, model.pt and metrics.json go to {args.out_dir.resolve()}")
            save_metrics(args, run_tutorial(args))
        if args.show:
            plt.show()
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
            lock.release()
        torch.set_num_threads(threads)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 + received[0] if received else status  # 130 after Ctrl-C, as shells report


if __name__ == "__main__":
    sys.exit(main())
