# %% [markdown]
# # A Softmax classifier for Fashion-MNIST images, in PyTorch
#
# One linear layer scores each class, and the softmax turns the scores into probabilities. This rebuilds
# "Building a Softmax Classifier for Images in PyTorch" (Machine Learning Mastery), *the original*. Sections 1
# to 4, its lesson, are the first sitting, 5 to 7 the second; the appendices are reference. A tensor is
# PyTorch's array; its `dim` is NumPy's axis. Each `# %%` line starts a notebook cell; `# %% [markdown]`, text.

# %%
"""A Softmax classifier for Fashion-MNIST images, in PyTorch: a tutorial (README.md)."""
# Skim this cell: most imports serve appendix B. IN_NOTEBOOK is True only in a notebook (Jupyter, Colab, VS Code),
# where the `if IN_NOTEBOOK:` cells run.
import argparse
import gzip
import json
import math
import sys
import zlib
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from PIL import Image, ImageOps
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import datasets
from torchvision.datasets.utils import check_integrity
from torchvision.transforms import v2

IN_NOTEBOOK = __name__ == "__main__" and "ipykernel" in sys.modules and Path(sys.argv[0]).name != "softmax_fashion.py"

# %% [markdown]
# ## 1. Prepare the data
#
# Fashion-MNIST has 70,000 greyscale pictures of clothes, 28 x 28 pixels each (60,000 to train on, 10,000 to
# test on), labelled with one of ten classes, 0 to 9. torchvision, PyTorch's library for images, downloads it.
# Like the original, we keep the first 4,000 training images, so that training takes seconds, and split them
# in order: 3,500 to train on, then 500 to *validate*, to measure the model on images it does not learn from.

# %%
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",  # classes 0 to 9
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IMAGE_SIDE = 28
SUBSET_SIZE, VAL_SIZE = 4000, 500  # 3,500 images to train on, then 500 to validate
DATA_DIR, OUT_DIR = Path("data"), Path("outputs")  # in the folder it runs in


def load_fashion_mnist(data_dir, train=True, count=None):
    """The first ``count`` images (all if None) of the training or test split, as rows of 784 numbers from 0
    (black) to 1 (white), and their class numbers."""
    dataset = datasets.FashionMNIST(data_dir, train=train, download=True)  # downloads only once
    # data: N x 28 x 28 whole numbers, 0 to 255; targets: N class numbers. flatten(start_dim=1) is NumPy's
    # reshape(n, -1), 28 x 28 to a row of 784; float: decimals
    return dataset.data[:count].flatten(start_dim=1).float() / 255, dataset.targets[:count]


def train_val_split(images, labels, val_size=VAL_SIZE):
    """((train images, labels), (validation images, labels)): the last ``val_size`` validate."""
    return (images[:-val_size], labels[:-val_size]), (images[-val_size:], labels[-val_size:])


def plot_images(images, labels, title, **imshow_args):
    """Ten images, titled with their classes; ``imshow_args``, any more keyword arguments, go to imshow."""
    fig, axes = plt.subplots(2, 5, figsize=(10, 4.6))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.85, hspace=0.25)  # margins, as fractions of it
    for ax, image, label in zip(axes.flat, images.cpu(), labels):  # cpu(): from a GPU, if there
        ax.imshow(image.view(IMAGE_SIDE, IMAGE_SIDE).numpy(), **imshow_args)  # view: NumPy's reshape
        ax.set_title(CLASSES[label])
        ax.set_axis_off()
    fig.suptitle(title)
    return fig


# %% [markdown]
# ## 2. Build the model
#
# A linear layer computes each output as a weighted sum of its inputs plus a bias. Ours turns an image's 784
# pixel values x into ten class scores, the *logits* (`@` multiplies matrices, as in NumPy; `nn.Linear` keeps a
# row of weights per output, hence the transpose, `.T`):
#
#     logits = x @ weight.T + bias        (weight: 10 x 784, bias: 10)
#
# Row i of `weight` is class i's template: an image scores high where its light pixels meet large weights.
# `nn.Linear` starts them at random, near 0; `torch.manual_seed` fixes which.
#
# Worked by hand, for three classes: logits z = (2, 1, 0), true class y = 0.
# - Softmax: p = exp(z) / sum(exp(z)) = (7.389, 2.718, 1) / 11.107, so p = (0.665, 0.245, 0.090). Computed as
#   exp(z - 2) = (1, 0.368, 0.135) over their sum, 1.503, p is the same (top and bottom are divided by exp(2)),
#   and exp cannot overflow, as exp(1000) would (to inf): PyTorch subtracts the largest logit first.
# - Cross-entropy loss: -log p[y] = -log 0.665 = 0.41 (the natural log): near 0 when the true class gets a
#   probability near 1, large when it gets little. Training lowers it; section 5 works out how, by hand.
#
# Where is the softmax? `forward` (below) returns the logits, and the loss, `nn.CrossEntropyLoss`, applies the softmax
# itself: never put one in `forward` too, where a second softmax would squash the probabilities towards equal and slow
# learning. The loss computes log p[y] as z[y] - log(sum(exp(z))), shifted as above: p[y] alone rounds to 0 where the
# model is sure and wrong, and log 0 is -inf. `predict_proba` applies the softmax, for probabilities.

# %%
class SoftmaxClassifier(nn.Module):
    """One linear layer. nn.Module, PyTorch's base class for models: layers made in __init__, used in forward."""

    def __init__(self, n_inputs=784, n_classes=10):
        super().__init__()  # nn.Module's own set-up, first
        self.linear = nn.Linear(n_inputs, n_classes)

    def forward(self, images):
        """Logits, N x 10, for N images (rows of 784, or 28 x 28, flattened here). model(images) calls it."""
        return self.linear(images.flatten(start_dim=1))

    def predict_proba(self, images):
        """Class probabilities, N x 10, each row adding up to 1."""
        with torch.no_grad():  # no record for backward() (section 3): we only evaluate
            return torch.softmax(self(images), dim=1)  # self(images): model(images)


# %%
if IN_NOTEBOOK:
    print(SoftmaxClassifier())  # its layers: Linear(in_features=784, out_features=10, bias=True)

# %% [markdown]
# ## 3. Train the model
#
# PyTorch records each computation with the model's weights, so that `loss.backward()` can work back through
# it and add to each weight's `.grad` its gradient, how fast the loss grows with that weight: this is *autograd*.
# Its record starts at the tensors that ask for a gradient (`requires_grad`), as `nn.Linear`'s weight and bias do;
# only they get a `.grad`, and results such as the logits do not.
# Training takes steps of stochastic gradient descent (SGD), each on a batch of 16 images. The optimizer,
# `torch.optim.SGD(model.parameters(), lr=0.01)`, holds the weight and bias (the parameters) and the *learning
# rate* lr, which sets how large a step is. A step:
#
# 1. `optimizer.zero_grad()` clears the old gradients (backward adds to them);
# 2. the loss function gives the batch's mean loss;
# 3. `loss.backward()` computes the gradients;
# 4. `optimizer.step()` does `weight -= lr * weight.grad`, and the same for the bias.
#
# *Stochastic*: each step sees a sample of the data. A pass over all of it is an *epoch*. To evaluate,
# `with torch.no_grad():` records nothing.
#
# An aside: batches usually come shuffled from `DataLoader(TensorDataset(images, labels), batch_size=16,
# shuffle=True)`. The original does not shuffle, so `images.split(16)` cuts its batches, 4 s faster over 200
# epochs. `model.train()` and `model.eval()` switch layers that act otherwise in training, such as dropout (which
# zeroes inputs at random): this model has none, but every loop calls them.

# %%
LEARNING_RATE, BATCH_SIZE, EPOCHS = 0.01, 16, 200  # the original's settings


def make_batches(images, labels, batch_size=BATCH_SIZE):
    """One epoch's (images, labels) batches, in order."""
    return list(zip(images.split(batch_size), labels.split(batch_size)))


def train_epoch(model, batches, loss_fn, optimizer):
    """One pass over ``batches``; returns the mean loss per image."""
    model.train()
    total_loss, seen = 0.0, 0
    for images, labels in batches:
        optimizer.zero_grad()
        loss = loss_fn(model(images), labels)  # the batch's mean loss
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)  # item(): the number; times the size, as the last batch is smaller
        seen += len(labels)
    return total_loss / seen


def evaluate(model, images, labels):
    """(predicted classes, accuracy in %, mean loss) on all ``images`` at once."""
    model.eval()
    with torch.no_grad():
        logits = model(images)
    predicted = logits.argmax(dim=1)  # the largest logit, so also the largest probability
    accuracy = 100 * (predicted == labels).sum().item() / len(labels)
    return predicted, accuracy, nn.functional.cross_entropy(logits, labels).item()  # what nn.CrossEntropyLoss calls


def fit(model, batches, val_data, loss_fn, optimizer, epochs, history, log_every=10):
    """Train for ``epochs`` passes over ``batches``, adding each epoch's training loss, and validation loss and
    accuracy on ``val_data``, to ``history``: the caller's, kept if Ctrl-C stops fit."""
    for epoch in range(epochs):
        train_loss = train_epoch(model, batches, loss_fn, optimizer)
        _, val_accuracy, val_loss = evaluate(model, *val_data)  # *: the pair's two items, as two arguments
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(val_accuracy)
        if epoch % log_every == 0 or epoch == epochs - 1:
            print(f"Epoch: {epoch}. Loss: {train_loss:.4f}. Accuracy: {val_accuracy:.1f}")
    return history


# %% [markdown]
# ## 4. Plot the results
#
# The training loss should fall fast, then slowly, and the validation accuracy rise and level off. Where the
# validation loss rises while the training loss falls, the model is *over-fitting*: learning its 3,500 images
# by heart rather than clothes (exercise 4).
#
# `train_and_plot` is the first sitting's program: ten images, a seeded model, `fit`, the curves, each figure
# saved with `fig.savefig`. The command line runs it with its flags, the cell below with the original's settings.
# Ctrl-C (a notebook's stop button) ends training early; the program goes on.

# %%
def plot_curves(curves, title):
    """A line over the epochs for each entry of ``curves``, a dict of {label: list of values}."""
    fig, ax = plt.subplots()
    for label, values in curves.items():
        ax.plot(values, label=label)
    ax.set(xlabel="epoch", title=title)
    ax.legend()
    return fig


def train_and_plot(train_data, val_data, batches, out_dir=OUT_DIR, epochs=EPOCHS, lr=LEARNING_RATE, seed=0,
                   log_every=10, fit_fn=fit):
    """Train a new model on ``batches`` and draw; return it and its history. ``fit_fn``: section 3's fit, unless
    --by-hand passes another."""
    images, labels = train_data
    out_dir.mkdir(parents=True, exist_ok=True)  # below, out_dir / "samples.png" joins a Path and a name
    plot_images(images[:10], labels[:10], "The first 10 training images", cmap="gray").savefig(out_dir / "samples.png")
    torch.manual_seed(seed)  # the same random starting weights each run
    model = SoftmaxClassifier().to(images.device)  # where the data is: the CPU, or a GPU
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    history = {"train_loss": [], "val_loss": [], "val_accuracy": []}
    try:
        fit_fn(model, batches, val_data, nn.CrossEntropyLoss(), optimizer, epochs, history, log_every)
    except KeyboardInterrupt:
        print(f"Interrupted in epoch {len(history['train_loss'])}: training stops here.")
    plot_curves({"training": history["train_loss"], "validation": history["val_loss"]},
                "Mean cross-entropy loss").savefig(out_dir / "loss.png")
    plot_curves({"validation": history["val_accuracy"]}, "Accuracy (%)").savefig(out_dir / "accuracy.png")
    return model, history


# %%
if IN_NOTEBOOK:  # the first sitting's program, with the original's settings
    train_data, val_data = train_val_split(*load_fashion_mnist(DATA_DIR, count=SUBSET_SIZE))
    model, history = train_and_plot(train_data, val_data, make_batches(*train_data))

# %% [markdown]
# The first sitting ends here. Back to the README: its figures, then the first exercises.

# %% [markdown]
# ## 5. By hand: the gradient, checked, and training
#
# Section 2's example, continued. No calculus? Take it on trust: `follow_one_image` checks it against autograd.
#
# The gradient g[i] = d loss / d z[i] says how fast the loss grows with the logit z[i]. With s = sum(exp(z)), the
# loss is -log(exp(z[y]) / s) = log(s) - z[y]. The derivative of exp is exp, that of log(s) is 1 / s, and rates
# multiply along a chain (the chain rule):
#
#     d log(s) / d z[i] = (1 / s) (d s / d z[i]) = exp(z[i]) / s = p[i]  (of s's terms, only exp(z[i]) holds z[i])
#     d z[y] / d z[i]   = one_hot(y)[i]        (1 if i = y, else 0)
#
# so g = p - one_hot(y), here (-0.335, 0.245, 0.090). As z[i] is the sum over pixels j of weight[i, j] x[j], plus
# bias[i], d z[i] / d weight[i, j] = x[j]: row i of `weight.grad` is g[i] times x, and `bias.grad` is g. A step
# subtracts lr times the gradient: as g[y] = p[y] - 1, the true class's row gains lr (1 - p[y]) x, moving its template
# towards the image, and each other row i loses lr p[i] x.
#
# `train_epoch_by_hand` trains with it; `python softmax_fashion.py --by-hand` uses it, through appendix B's
# `fit_by_hand`.

# %%
def follow_one_image(model, image, label):
    """Print one image's logits, softmax, loss and gradient, computed by hand and checked against PyTorch."""
    # unsqueeze(0): a batch of one image; [0]: its row. For logits.grad (section 3: only where the record starts),
    # detach() cuts the logits from the weights' record, and requires_grad_() (_: in place) starts one at them.
    logits = model(image.unsqueeze(0))[0].detach().requires_grad_()
    torch_loss = nn.functional.cross_entropy(logits.unsqueeze(0), label.unsqueeze(0))
    torch_loss.backward()  # puts the loss's gradient in logits.grad
    with torch.no_grad():
        shifted = logits - logits.max()  # z - max(z), as in section 2
        probabilities = shifted.exp() / shifted.exp().sum()
        loss = shifted.exp().sum().log() - shifted[label]  # log(sum(exp(z))) - z[y], both shifted
        gradient = probabilities - nn.functional.one_hot(label, len(CLASSES))
        # assert_close raises where they differ beyond rounding
        torch.testing.assert_close(probabilities, torch.softmax(logits, dim=0))
        torch.testing.assert_close(loss, torch_loss)
        torch.testing.assert_close(gradient, logits.grad)
    y = label.item()
    print(f"One validation image, a {CLASSES[y]} (class {y}), by hand; PyTorch's numbers are the same:")
    for name, values in [("logits z", logits), ("softmax p", probabilities), ("gradient p - one_hot", gradient)]:
        print(f"  {name:22}", " ".join(f"{value:7.2f}" for value in values.tolist()))
    print(f"  loss -log p[{y}] = -log {probabilities[y]:.3f} = {loss:.3f}")


def train_epoch_by_hand(model, batches, loss_fn, optimizer):
    """train_epoch(), with the gradients above in place of backward(): the same weights, in two thirds of the time."""
    model.train()
    total_loss, seen = 0.0, 0
    with torch.no_grad():  # nothing to record: we compute the gradients
        for images, labels in batches:
            logits = model(images)
            # g, N x 10: each image's p - one_hot(y), divided by N, as the loss is the batch's mean
            g = (torch.softmax(logits, dim=1) - nn.functional.one_hot(labels, len(CLASSES))) / len(labels)
            # (10 x N) @ (N x 784): row i is the sum of g[n, i] times image n. Set, not added: no zero_grad.
            model.linear.weight.grad = g.T @ images
            model.linear.bias.grad = g.sum(dim=0)
            optimizer.step()  # weight -= lr * weight.grad, as after backward()
            total_loss += loss_fn(logits, labels).item() * len(labels)
            seen += len(labels)
    return total_loss / seen


# %%
if IN_NOTEBOOK:
    follow_one_image(model, val_data[0][0], val_data[1][0])

# %% [markdown]
# ## 6. The test set, the confusions, and saving
#
# Chance moves an accuracy a (a fraction: 0.84) on n images by about sqrt(a (1 - a) / n) (its standard deviation): 1.6
# points on 500 images, 0.4 on 10,000. And an accuracy used to choose settings, as in exercise 4, is optimistic: the
# best of many noisy scores is partly luck. So the final score comes from the 10,000 test images, used only here.
#
# A model is saved as its `state_dict`, its learned tensors by name. To load it, make a new model and give it
# those. `test_and_save`, the second sitting's program, runs after appendix A, which draws its figures.

# %%
def confusion_matrix(labels, predicted, n_classes=len(CLASSES)):
    """counts[i, j]: how many images of class i were predicted as class j."""
    # Each (true, predicted) pair as one number: a Shirt (6) taken for a T-shirt/top (0) is 60. bincount counts
    # each number from 0 to 99; reshaped to 10 x 10, count 60 is in row 6, column 0.
    pairs = labels * n_classes + predicted
    return torch.bincount(pairs, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def load_model(path, device="cpu"):
    """A new SoftmaxClassifier with the weights saved in ``path``, on ``device``."""
    model = SoftmaxClassifier()
    # map_location: onto ``device``. weights_only: tensors only, as a .pt file can hold code that loading runs.
    model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return model.to(device)


def test_and_save(model, test_data, out_dir=OUT_DIR):
    """Save the model, score it on the test set, and draw what it learned; return the test accuracy and loss."""
    torch.save(model.state_dict(), out_dir / "model.pt")
    images, labels = test_data
    predicted, accuracy, loss = evaluate(model, images, labels)
    counts = confusion_matrix(labels, predicted).cpu()
    print(f"Test set ({len(labels):,} images): accuracy {accuracy:.1f}%, mean loss {loss:.4f}")
    probabilities = model.predict_proba(images[:12])
    plot_predictions(images[:12], labels[:12], probabilities).savefig(out_dir / "predictions.png")
    plot_weights(model.linear.weight).savefig(out_dir / "weights.png")
    plot_confusion(counts).savefig(out_dir / "confusion.png")
    return {"test_accuracy": accuracy, "test_loss": loss}


# %% [markdown]
# ## 7. Use the model
#
# The model knows only centred garments, light on black, 28 x 28 pixels, in greyscale. `prepare_picture` makes
# a picture into such an image, in the six steps in which Fashion-MNIST's authors made theirs from shop photos
# (https://arxiv.org/abs/1708.07747), with torchvision's transforms, `v2`. Skim its code, and `read_picture`'s,
# which reads a picture file as a tensor: their comments say what matters.

# %%
LARGEST_SIDE = 1024  # larger pictures are reduced first


def read_picture(path):
    """A picture file's first frame as a 3 x H x W tensor (colour channels first) of whole numbers, 0 to 255:
    upright, transparent parts white, at most LARGEST_SIDE pixels a side. Pillow raises an error where it can't."""
    with Image.open(path) as image:
        image.thumbnail((LARGEST_SIDE, LARGEST_SIDE), reducing_gap=None)  # reduce() can't do 16 bits
        image = ImageOps.exif_transpose(image)  # as the camera was held
        if image.mode.startswith("I;16"):  # 16-bit grey: convert() would clip it, not scale it
            image = image.convert("I").point(lambda value: value / 257).convert("L")
        picture = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    return v2.functional.pil_to_tensor(picture.convert("RGB"))


def prepare_picture(picture):
    """A picture tensor, C x H x W (C: 1 grey or 3 colours), as a Fashion-MNIST image: 1 x 28 x 28, in [0, 1]."""
    picture = v2.functional.to_dtype(picture, torch.float32, scale=True)  # 0..255 to 0..1; floats stay
    background = picture[:, [0, 0, -1, -1], [0, -1, 0, -1]].median(dim=1).values  # the 4 corners' median
    # 1. Trim the edges of the background's colour, give or take a JPEG's noise. torch.where(condition): the rows
    #    and columns of the pixels that differ in any channel (amax over dim 0, the channels) from the background.
    rows, cols = torch.where((picture - background[:, None, None]).abs().amax(dim=0) > 0.1)
    if len(rows):
        picture = picture[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    # 2. Resize the longest edge to 28 pixels, keeping the proportions.
    height, width = picture.shape[1:]
    size = [max(1, IMAGE_SIDE * side // max(height, width)) for side in (height, width)]
    picture = v2.functional.resize(picture, size, antialias=True)
    # 3. Sharpen by a factor of 2, which best restored test images that had been enlarged, as photos are, and shrunk.
    #    clamp: NumPy's clip.
    picture = v2.functional.adjust_sharpness(picture.clamp(0, 1), sharpness_factor=2)
    # 4. Extend to 28 x 28 with the background, centred (an odd margin's extra pixel left or on top, as in the
    #    dataset). pad takes [left, top, right, bottom].
    height, width = picture.shape[1:]
    left, top = (IMAGE_SIDE - width + 1) // 2, (IMAGE_SIDE - height + 1) // 2
    picture = v2.functional.pad(picture, [left, top, IMAGE_SIDE - width - left, IMAGE_SIDE - height - top],
                                fill=background.tolist())
    # 5. Where the background is light, negate: the garment becomes light on black.
    if background.mean() > 0.5:
        picture = 1 - picture
    # 6. Greyscale, in the 256 levels of an 8-bit file.
    if len(picture) == 3:
        picture = v2.functional.rgb_to_grayscale(picture)
    return (picture * 255).round() / 255


def classify_picture(model, picture):
    """(the prepared 1 x 28 x 28 image, its ten class probabilities) for a picture tensor."""
    image = prepare_picture(picture)
    model.eval()
    return image, model.predict_proba(image.unsqueeze(0))[0]  # a batch of one image, and its one row


def top_classes(probabilities, k=3):
    """'Ankle boot 91%, Sneaker 6%, Sandal 2%': the ``k`` most probable classes."""
    values, indices = probabilities.topk(k)  # the k largest, and where they are
    return ", ".join(f"{CLASSES[i]} {p:.0%}" for p, i in zip(values.tolist(), indices.tolist()))


# %% [markdown]
# The second sitting ends here; its program runs after appendix A. Back to the README.

# %% [markdown]
# ## Appendix A: drawing the figures

# %%
def plot_weights(weight):
    """The weights as ten 28 x 28 images, on one colour scale centred at 0."""
    limit = weight.abs().max().item()
    fig = plot_images(weight.detach(), range(len(CLASSES)), "Learned weights per class: red where a light pixel "
                      "raises the class's score, blue where it lowers it", cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.subplots_adjust(right=0.86)  # room for the colour bar
    fig.colorbar(fig.axes[0].images[0], cax=fig.add_axes((0.89, 0.1, 0.02, 0.68)), label="weight")
    return fig


def draw_probabilities(ax, probabilities, true_class=None):
    """A bar per class: the most probable one dark, the true one blue, a wrong guess red."""
    colors = ["lightgray"] * len(CLASSES)
    colors[probabilities.argmax()] = "dimgray" if true_class is None else "tab:red"
    if true_class is not None:
        colors[true_class] = "tab:blue"  # over the red when the guess is right
    ax.barh(range(len(CLASSES)), probabilities.tolist(), color=colors)
    ax.set_xlim(0, 1)
    ax.set_xticks([0, 0.5, 1], ["0", "50%", "100%"], fontsize=7)
    ax.set_yticks(range(len(CLASSES)), CLASSES, fontsize=7)
    ax.invert_yaxis()  # class 0 at the top


def plot_predictions(images, labels, probabilities, per_row=3):
    """Each image beside a bar chart of its ten class probabilities."""
    n_rows = -(-len(images) // per_row)  # rounded up
    fig, axes = plt.subplots(n_rows, 2 * per_row, figsize=(13, 2.3 * n_rows + 0.6), layout="constrained",
                             width_ratios=[1, 1.5] * per_row)
    for image_ax, bar_ax, image, label, probs in zip(axes.flat[0::2], axes.flat[1::2], images.cpu(),
                                                     labels.tolist(), probabilities.cpu()):
        guess = probs.argmax().item()
        image_ax.imshow(image.view(IMAGE_SIDE, IMAGE_SIDE).numpy(), cmap="gray")
        image_ax.set_axis_off()
        image_ax.set_title(f"{CLASSES[guess]} {probs[guess]:.0%}\n(true: {CLASSES[label]})",
                           color="tab:red" if guess != label else "black", fontsize=9)
        draw_probabilities(bar_ax, probs, label)
    fig.suptitle("The first test images' predicted probabilities: blue is the true class, red a wrong guess")
    return fig


def plot_confusion(counts):
    fig, ax = plt.subplots(figsize=(7.5, 6.6), layout="constrained")
    ax.imshow(counts.numpy(), cmap="Blues")
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set(xlabel="predicted class", ylabel="true class")
    for i, row in enumerate(counts.tolist()):
        for j, count in enumerate(row):
            ax.text(j, i, count, ha="center", va="center", fontsize=8,
                    color="white" if count > counts.max() / 2 else "black")  # dark on light, light on dark
    ax.set_title(f"Confusion matrix on {counts.sum():,} test images ({100 * counts.trace() / counts.sum():.1f}% right)")
    return fig


def plot_pictures(shown):
    """Rows of (name, picture, image, probabilities): as given, as the model sees it, and the bars."""
    fig, axes = plt.subplots(len(shown), 3, figsize=(8, 1.9 * len(shown) + 0.8), squeeze=False, layout="constrained",
                             width_ratios=[1.4, 1, 1.6])
    for (given_ax, seen_ax, bar_ax), (name, picture, image, probs) in zip(axes, shown):
        given_ax.imshow(picture.permute(1, 2, 0).numpy())  # H x W x RGB, as matplotlib takes it
        given_ax.set_title(name, fontsize=9, parse_math=False)  # a "$" in a name is no formula
        seen_ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
        seen_ax.set_title("what the model sees", fontsize=9)
        given_ax.axis("off"), seen_ax.axis("off")
        draw_probabilities(bar_ax, probs)
    fig.suptitle("Your pictures, prepared as Fashion-MNIST's images were, and the model's probabilities")
    return fig


# %%
if IN_NOTEBOOK:  # the second sitting's program, section 6's
    results = test_and_save(model, load_fashion_mnist(DATA_DIR, train=False))

# %% [markdown]
# ## Appendix B: the command line

# %%
PROG = "softmax_fashion.py"
# MD5 checksums of the original files, which Debian's dataset-fashion-mnist holds gzipped.
RAW_FILES = {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
             "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
             "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
             "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
REINSTALL = "reinstall it with 'sudo apt-get install --reinstall dataset-fashion-mnist'"
PICTURES_SHOWN = 12  # pictures that predict.png draws, the only ones kept in memory


def prepare_data(data_dir):
    """The four original files in data_dir/FashionMNIST/raw, from Debian's copy or downloaded, checked."""
    raw_dir = Path(data_dir) / "FashionMNIST" / "raw"
    for name, md5 in RAW_FILES.items():
        path, copy = raw_dir / name, DEBIAN_DIR / f"{name}.gz"
        if not path.exists() and copy.exists():
            raw_dir.mkdir(parents=True, exist_ok=True)
            try:
                path.write_bytes(gzip.decompress(copy.read_bytes()))
            except (EOFError, zlib.error, gzip.BadGzipFile) as error:
                raise OSError(f"{copy} is damaged ({error}): {REINSTALL}") from None
            if not check_integrity(path, md5):
                path.unlink()
                raise OSError(f"{copy} does not decompress to the original file: {REINSTALL}")
    if not all((raw_dir / name).exists() for name in RAW_FILES):
        try:
            datasets.FashionMNIST(data_dir, download=True)
        except RuntimeError:  # torchvision's "Error downloading"
            raise OSError(f"Fashion-MNIST is not in {raw_dir} and could not be downloaded: connect to the internet, "
                          f"or install the offline copy with 'sudo apt-get install dataset-fashion-mnist'") from None
    for name, md5 in RAW_FILES.items():
        if not check_integrity(raw_dir / name, md5):
            raise OSError(f"{raw_dir / name} is damaged (its MD5 checksum is not the original's): delete it")


def fit_by_hand(model, batches, val_data, loss_fn, optimizer, epochs, history, log_every=10):
    """fit(), with each epoch trained by hand (section 5): for --by-hand."""
    for epoch in range(epochs):
        train_loss = train_epoch_by_hand(model, batches, loss_fn, optimizer)
        _, val_accuracy, val_loss = evaluate(model, *val_data)
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(val_accuracy)
        if epoch % log_every == 0 or epoch == epochs - 1:
            print(f"Epoch: {epoch}. Loss: {train_loss:.4f}. Accuracy: {val_accuracy:.1f}")
    return history


def run(args):
    """Both sittings' programs with the flags' settings, then metrics.json; return the exit status."""
    images, labels = load_fashion_mnist(args.data_dir, count=args.train_size)
    train_data, val_data = train_val_split(images.to(args.device), labels.to(args.device), args.val_size)
    batches = make_batches(*train_data, args.batch_size)
    if args.shuffle:  # a new order each epoch, the same each run
        batches = DataLoader(TensorDataset(*train_data), args.batch_size, shuffle=True,
                             generator=torch.Generator().manual_seed(args.seed))
    model, history = train_and_plot(train_data, val_data, batches, args.out_dir, args.epochs, args.lr, args.seed,
                                    args.log_every, fit_by_hand if args.by_hand else fit)
    losses = history["train_loss"]
    if not math.isfinite(sum(losses)):  # steps too large overshoot, and the loss overflows: model.pt stays as it was
        raise FloatingPointError(f"the training loss became {losses[-1]}: the learning rate {args.lr:g} is too high")
    follow_one_image(model, val_data[0][0], val_data[1][0])
    test_data = [tensor.to(args.device) for tensor in load_fashion_mnist(args.data_dir, train=False)]
    results = test_and_save(model, test_data, args.out_dir)
    metrics = {"settings": vars(args), "epochs_run": len(losses), **history, **results, "torch": torch.__version__}
    (args.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str), encoding="utf-8")
    return 0 if len(losses) == args.epochs else 130  # 130 after Ctrl-C, as shells report it


def picture_files(paths):
    """The files given, each folder replaced by its files that Pillow opens, in name order, hidden ones left out."""
    extensions = {extension for extension, kind in Image.registered_extensions().items() if kind in Image.OPEN}
    for path in paths:
        if path.is_dir():
            yield from sorted((file for file in path.iterdir() if file.is_file() and not file.name.startswith(".")
                               and file.suffix.lower() in extensions), key=lambda file: file.name)
        else:
            yield path


def predict(model, paths, out_dir):
    """Print each picture's likeliest classes, and draw the first in predict.png; return 1 if one is unreadable."""
    shown, failed = [], 0
    for path in picture_files(paths):
        try:
            picture = read_picture(path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:  # damaged, or no picture
            print(f"{PROG}: error: cannot read {path}: {getattr(error, 'strerror', None) or error}", file=sys.stderr)
            failed += 1
            continue
        image, probabilities = classify_picture(model, picture)
        name = path.name.encode(errors="surrogateescape").decode(errors="replace")  # not UTF-8: "\ufffd" for bytes
        print(f"{name}: {top_classes(probabilities)}")
        if len(shown) < PICTURES_SHOWN:
            shown.append((name, picture, image, probabilities))
    if shown:  # out_dir exists: model.pt came from it
        plot_pictures(shown).savefig(out_dir / "predict.png")
    elif not failed:
        raise OSError(f"no picture files in {', '.join(map(str, paths))}")
    return 1 if failed else 0


def load_trained_model(path):
    """load_model(), with one line for a missing model.pt, or a file that is not one."""
    train = f"train one with 'python {PROG} --out-dir {path.parent}'"
    try:
        return load_model(path)
    except FileNotFoundError:
        raise OSError(f"no trained model at {path} yet: {train}") from None
    except OSError:
        raise  # the OS's own message says what
    except Exception:  # what torch.load raises varies with the file
        raise OSError(f"{path} is not a model of this tutorial: {train}") from None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog=PROG, usage="%(prog)s [options] [--predict IMAGE ...]",
                                     description="Train a Softmax classifier on Fashion-MNIST, or classify pictures.")
    add = parser.add_argument
    add("--epochs", metavar="N", type=int, default=EPOCHS, help="passes over the training images (%(default)s)")
    add("--lr", type=float, default=LEARNING_RATE, help="learning rate of SGD (%(default)s)")
    add("--batch-size", metavar="N", type=int, default=BATCH_SIZE, help="images per step (%(default)s)")
    add("--shuffle", action="store_true", help="shuffle the training images every epoch")
    add("--by-hand", action="store_true", help="train with section 5's gradients, not autograd's")
    add("--train-size", metavar="N", type=int, default=SUBSET_SIZE, help="the first N training images (%(default)s)")
    add("--val-size", metavar="N", type=int, default=VAL_SIZE, help="how many of them validate (%(default)s)")
    add("--seed", metavar="N", type=int, default=0, help="seed of the starting weights and of --shuffle (%(default)s)")
    add("--data-dir", metavar="DIR", type=Path, default=DATA_DIR, help="where Fashion-MNIST is kept (%(default)s)")
    add("--out-dir", metavar="DIR", type=Path, default=OUT_DIR, help="where the figures and model.pt go (%(default)s)")
    add("--device", default="cpu", help="where to train: cpu, or a GPU: cuda, cuda:1... (%(default)s)")
    add("--log-every", metavar="N", type=int, default=10, help="print progress every N epochs (%(default)s)")
    add("--show", action="store_true", help="also show the figures (in windows, or a notebook)")
    add("--predict", metavar="IMAGE", nargs="+", type=Path, help="classify pictures, or folders of them, instead")
    args = parser.parse_args(argv)
    for flag, fits, rule in [("epochs", args.epochs >= 1, "at least 1"), ("lr", 0 < args.lr < math.inf, "above 0"),
                             ("batch-size", args.batch_size >= 1, "at least 1"), ("log-every", args.log_every >= 1,
                             "at least 1"), ("seed", 0 <= args.seed < 2**64, "from 0 to 2**64 - 1"),  # manual_seed's
                             ("train-size", 1 < args.train_size <= 60_000, "from 2 to 60000"),  # Fashion-MNIST's
                             ("val-size", 0 < args.val_size < args.train_size, "from 1 to below --train-size")]:
        if not fits:
            parser.error(f"argument --{flag}: must be {rule}, not {getattr(args, flag.replace('-', '_'))}")
    try:
        torch.empty(0, device=args.device)  # PyTorch's own check of the device
    except (RuntimeError, AssertionError) as error:
        parser.error(f"argument --device: cannot use {args.device} here ({str(error).splitlines()[0]})")
    return args


def main(argv=None):
    """Run the tutorial, or classify --predict's pictures; return the exit status. A user's mistake: one line."""
    args = parse_args(argv)  # a bad flag: argparse's line, and status 2
    if hasattr(sys.stdout, "reconfigure"):  # a terminal or a file, not a notebook
        sys.stdout.reconfigure(errors="backslashreplace")  # for names that the console's code page lacks
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # for steps on 16 images, one is as fast as more, and saves CPU time
    try:
        if args.predict:
            status = predict(load_trained_model(args.out_dir / "model.pt"), args.predict, args.out_dir)
        else:
            prepare_data(args.data_dir)
            print(f"Figures, model.pt and metrics.json go to {args.out_dir.resolve()}")
            status = run(args)
        if args.show:
            plt.show()  # in windows, or a notebook
        return status
    except (OSError, FloatingPointError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    finally:
        plt.close("all")
        torch.set_num_threads(threads)


# %%
if __name__ == "__main__" and not IN_NOTEBOOK:  # a notebook's cells have run the tutorial above
    sys.exit(main())
