"""
A Softmax classifier for Fashion-MNIST images, in PyTorch
=========================================================

A Softmax classifier is the simplest neural network that sorts images into
classes: one linear layer gives each class a score (a "logit"), and the
softmax function turns the ten scores into ten probabilities that add up to 1.
It is also the last layer of almost every deep image classifier.

This file is the whole tutorial. Read it from top to bottom, then run it:

    python softmax_fashion.py                   # the tutorial: 200 epochs, then figures and files
    python softmax_fashion.py --predict my.jpg  # then classify a picture of your own

It goes in this order:

1. Prepare the data: 4,000 Fashion-MNIST images, 3,500 to train on and 500 to validate.
2. Build the model: one ``nn.Linear(784, 10)``, and a check of its softmax and loss by hand.
3. Train the model: cross-entropy loss and plain SGD, 200 epochs of batches of 16.
4. Plot the results: the training loss and the validation accuracy of each epoch.
5. Beyond the tutorial: the test set, the probabilities, the weights, the confusions,
   and a saved model that loads again.
6. Putting it together: the tutorial's program, as one function.
7. Use the model: classify pictures of your own.

An appendix holds the command line and the safety net (offline data, file
checks, Ctrl-C); the story's few calls into it say so.
"""

import json
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn
from torchvision import datasets
from torchvision.io import decode_image
from torchvision.transforms import v2

# =============================================================================
# 1. Prepare the data
# =============================================================================
# Fashion-MNIST has 70,000 greyscale pictures of clothes, 28 x 28 pixels each,
# 60,000 for training and 10,000 for testing. Each is labelled with one of ten
# classes, numbered 0 to 9. torchvision knows where to download the dataset
# and how to read its files. Its dataset object keeps all the images of a
# split in one tensor, ``dataset.data``, and the labels in another,
# ``dataset.targets``. (A tensor is PyTorch's array: like a NumPy array, but
# it can also live on a GPU and record how it was computed, for gradients.)
#
# Like the original tutorial, we keep only the first 4,000 training images, so
# that training takes seconds, and split them in order: 3,500 to train on, and
# the last 500 to validate, that is, to measure the model on images it does
# not learn from. (The tutorial skips shuffling before the split "to keep the
# code simple".)

CLASSES = (  # the class names, in the order of their numbers 0 to 9
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
IMAGE_SIDE = 28
TRAIN_SIZE = 4000  # the first 4,000 images of the training split...
VAL_SIZE = 500     # ...of which the last 500 validate


def load_fashion_mnist(data_dir, train=True, count=None):
    """The first ``count`` images of a split (all when None) as rows of 784 floats in [0, 1], and their labels.

    ``train=True`` reads the 60,000 training images, ``train=False`` the 10,000 test images.
    """
    dataset = open_fashion_mnist(data_dir, train, count)  # the appendix: offline copy, file checks
    images = dataset.data[:count]      # uint8 (whole numbers 0 to 255), N x 28 x 28: 0 is black
    labels = dataset.targets[:count]   # class numbers 0 to 9
    # Pixels go from 0..255 to floats in [0, 1], as the tutorial's transforms.ToTensor() makes them.
    # flatten(start_dim=1) keeps dimension 0 (one entry per image) and turns each 28 x 28 image
    # into one row of 784 numbers: a linear layer sees an image as one long vector.
    return images.flatten(start_dim=1).float() / 255, labels


def split(images, labels, val_size=VAL_SIZE):
    """((train images, train labels), (validation images, validation labels)), in dataset order."""
    n_train = len(images) - val_size
    return (images[:n_train], labels[:n_train]), (images[n_train:], labels[n_train:])


def as_pictures(rows):
    """Rows of 784 numbers as 28 x 28 NumPy arrays for matplotlib (detach() and cpu() let
    it draw the weights too, which record gradients, and tensors on a GPU)."""
    return rows.detach().cpu().reshape(-1, IMAGE_SIDE, IMAGE_SIDE).numpy()


def plot_samples(images, labels):
    """The first ten images with their class names, as the tutorial draws them: light on black."""
    fig, axes = plt.subplots(2, 5, figsize=(9, 4.4))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.84, hspace=0.25)
    for ax, picture, label in zip(axes.flat, as_pictures(images), labels.tolist()):
        ax.imshow(picture, cmap="gray")
        ax.set_title(CLASSES[label])
        ax.set_axis_off()
    fig.suptitle("The first 10 Fashion-MNIST training images")
    return fig


# =============================================================================
# 2. Build the model
# =============================================================================
# The model is one linear layer: 784 pixel values in, 10 class scores out,
#
#     logits = images @ weight.T + bias        (weight: 10 x 784, bias: 10)
#
# nn.Linear stores one row of 784 weights per class: a template that an image
# is compared with pixel by pixel (``weights.png`` draws the ten templates).
# It starts them at small random values; ``torch.manual_seed`` fixes which,
# so that a run can be repeated.
#
# Where is the softmax? ``forward`` returns the logits on purpose. The loss
# function, ``nn.CrossEntropyLoss``, applies the softmax itself, as
# log_softmax(z) = z - log(sum(exp(z))), which is more accurate than taking
# the log of probabilities computed separately. Where we want probabilities,
# ``predict_proba`` applies the softmax: exp(z) / sum(exp(z)) for logits z.


class SoftmaxClassifier(nn.Module):
    def __init__(self, n_inputs=IMAGE_SIDE * IMAGE_SIDE, n_classes=len(CLASSES)):
        super().__init__()  # lets nn.Module keep track of the layers we add
        self.linear = nn.Linear(n_inputs, n_classes)

    def forward(self, images):
        """Logits, N x 10, for N images of any shape (N x 784, N x 28 x 28, N x 1 x 28 x 28)."""
        return self.linear(images.flatten(start_dim=1))

    @torch.no_grad()  # no training here, so autograd need not record anything
    def predict_proba(self, images):
        """Class probabilities, N x 10: the softmax of the logits. Each row adds up to 1.

        Puts the model in evaluation mode (see section 3), as any prediction should.
        """
        if images.max() > 1:
            raise ValueError("pixel values must be in [0, 1], as in training: divide them by 255")
        self.eval()
        return torch.softmax(self(images), dim=1)  # calling a module runs its forward()


def describe(model):
    """Print the model and the shape of each tensor it learns (its state_dict, as the tutorial prints)."""
    print(model)
    for name, tensor in model.state_dict().items():  # the learned tensors, by name
        print(f"  {name}: {tuple(tensor.shape)}")
    print(f"  {sum(p.numel() for p in model.parameters()):,} parameters")


# One image, by hand. Take one image, its true class y, and its ten logits z.
# The softmax gives the probabilities p = exp(z) / sum(exp(z)). The
# cross-entropy loss is -log p[y]: near 0 when the model gives the true class
# a probability near 1, large when it gives it little. Its gradient with
# respect to the logits is p - one_hot(y), where one_hot(y) is ten zeros with
# a 1 at y. (Differentiate -z[y] + log(sum(exp(z))) by each z[i].) So training
# pushes the true class's logit up and every other logit down, each in
# proportion to its probability. PyTorch computes the gradient with autograd,
# its automatic differentiation: it records the operations on tensors that
# require gradients, and ``backward()`` works back through them.
#
# ``follow_one_image`` computes each of these by hand and checks it against
# PyTorch. The run calls it after training, when the probabilities mean
# something.

def follow_one_image(model, image, label):
    """Print the logits, softmax, loss and gradient of one image, by hand; return PyTorch's differences."""
    # model() takes a batch: unsqueeze(0) makes a batch of one, [0] takes its logits back out.
    # detach() cuts them off from the weights, and requires_grad_() (an underscore means "in
    # place") makes them a leaf: backward() stops there and leaves their gradient in .grad.
    logits = model(image.unsqueeze(0))[0].detach().requires_grad_()
    probabilities = logits.exp() / logits.exp().sum()
    loss = -probabilities[label].log()
    gradient = probabilities - nn.functional.one_hot(label, len(CLASSES))

    loss_fn = nn.CrossEntropyLoss()  # it too takes a batch: N x 10 logits and N labels
    torch_loss = loss_fn(logits.unsqueeze(0), label.unsqueeze(0))
    torch_loss.backward()
    differences = {
        "torch.softmax": (probabilities - torch.softmax(logits, dim=0)).abs().max().item(),
        "nn.CrossEntropyLoss": (loss - torch_loss).abs().item(),
        "autograd": (gradient - logits.grad).abs().max().item(),
    }

    def row(values):
        return " ".join(f"{value:6.2f}" for value in values.tolist())
    y = label.item()
    print(f"One validation image, a {CLASSES[y]} (class {y}), by hand:")
    print(f"  logits z                {row(logits)}")
    print(f"  softmax p               {row(probabilities)}")
    print(f"  loss -log p[{y}]          {loss.item():.4f}")
    print(f"  gradient p - one_hot    {row(gradient)}")
    print("  largest difference from PyTorch: "
          + ", ".join(f"{name} {difference:.0e}" for name, difference in differences.items()))
    for name, difference in differences.items():  # float32 rounding is about 1e-7
        assert difference < 1e-5, f"by hand and {name} disagree by {difference}"
    return differences


# =============================================================================
# 3. Train the model
# =============================================================================
# The tutorial's settings. The command line's flags use them as defaults.
LEARNING_RATE = 0.01  # how far each step moves the weights
BATCH_SIZE = 16       # images per step
EPOCHS = 200          # passes over the 3,500 training images
#
# Training repeats four steps for each batch of 16 images: clear the old
# gradients, compute the loss, let autograd compute the gradient of the loss
# with respect to every weight (``backward``), and move every weight a small
# step against its gradient (``optimizer.step()``: weight -= 0.01 * gradient,
# plain stochastic gradient descent). One pass over all training images is
# an epoch. Epochs are numbered from 0, as in the tutorial: epoch 199 is the
# 200th and last.
#
# The original tutorial hands its images to a DataLoader, PyTorch's batching
# helper, which gives them in dataset order in batches of 16, the last one
# smaller (3,500 = 218 x 16 + 12). We cut the same batches from the image
# tensor once, instead of letting the DataLoader stack 16 separate images
# again at every step: the arithmetic, and so the trained weights, are the
# same. With ``--shuffle`` they come in a new random order every epoch.
#
# After each epoch, we measure the accuracy on the 500 validation images, all
# in one batch.
#
# Some layers work differently while training: dropout drops random inputs,
# batch normalisation uses the statistics of the batch. ``model.train()`` and
# ``model.eval()`` switch them. This model has no such layer, so they change
# nothing here, but they belong in every training loop: forgetting them is a
# classic bug once such a layer is added.


def make_batches(images, labels, batch_size=BATCH_SIZE, generator=None):
    """The (images, labels) batches of one epoch: in dataset order, as a DataLoader without
    shuffling cuts them, or, given a random ``generator``, in an order drawn from it."""
    if generator is not None:
        order = torch.randperm(len(labels), generator=generator).to(labels.device)
        images, labels = images[order], labels[order]
    return list(zip(images.split(batch_size), labels.split(batch_size)))


def train_epoch(model, batches, loss_fn, optimizer, should_stop):
    """One pass over ``batches``; returns the mean loss per image."""
    model.train()
    total_loss, seen = 0.0, 0
    for images, labels in batches:
        # backward() adds to .grad, so clear it. The tutorial's optimizer.zero_grad() clears the
        # same gradients with profiler hooks: 13 us against 5 us here, in a step of about 350 us.
        model.zero_grad()
        loss = loss_fn(model(images), labels)  # the mean loss of this batch
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)  # times its size: the last batch is smaller
        seen += len(labels)
        if should_stop():  # true once Ctrl-C asks training to stop (see the appendix)
            break
    return total_loss / seen


@torch.no_grad()  # nothing to train here, so autograd need not record anything
def evaluate(model, images, labels):
    """(predicted classes, accuracy in %, mean loss) on all ``images`` at once."""
    model.eval()
    logits = model(images)
    predicted = logits.argmax(dim=1)  # the largest logit, so also the largest probability
    accuracy = 100 * (predicted == labels).sum().item() / len(labels)
    loss = nn.functional.cross_entropy(logits, labels)  # nn.CrossEntropyLoss as a function
    return predicted, accuracy, loss.item()


def fit(model, train_data, val_data, epochs=EPOCHS, lr=LEARNING_RATE, batch_size=BATCH_SIZE,
        shuffle_seed=None, log_every=10, should_stop=lambda: False):
    """Train ``model`` and return its history: the training loss and validation accuracy of each epoch.

    ``train_data`` and ``val_data`` are (images, labels) pairs. With a
    ``shuffle_seed``, the batches come in a new order every epoch, drawn from
    a generator with that seed. Progress is printed every ``log_every``
    epochs and after the last. ``should_stop()`` is asked after every step.
    """
    loss_fn = nn.CrossEntropyLoss()  # softmax, then -log p[true class], averaged over the batch
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    generator = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
    batches = make_batches(*train_data, batch_size)
    history = {"train_loss": [], "val_accuracy": []}
    start = time.perf_counter()
    with one_cpu_thread():  # the appendix: steps this small run fastest on one core
        for epoch in range(epochs):
            if generator is not None:
                batches = make_batches(*train_data, batch_size, generator)
            train_loss = train_epoch(model, batches, loss_fn, optimizer, should_stop)
            if not math.isfinite(train_loss):  # steps too large overshoot, and the loss overflows
                raise UserError(f"training stopped in epoch {epoch}: the loss became {train_loss}, so the "
                                f"learning rate --lr {lr:g} is too high; try a smaller one")
            _, val_accuracy, _ = evaluate(model, *val_data)
            history["train_loss"].append(train_loss)
            history["val_accuracy"].append(val_accuracy)
            stopping = should_stop()
            if epoch % log_every == 0 or epoch == epochs - 1 or stopping:
                print(f"Epoch: {epoch}. Loss: {train_loss:.4f}. Accuracy: {val_accuracy:.1f} "
                      f"({time.perf_counter() - start:.1f} s)", flush=True)
            if stopping:
                break
    return history


# =============================================================================
# 4. Plot the results
# =============================================================================
# Two curves tell how training went: the training loss should fall quickly,
# then slowly; the validation accuracy should rise and level off. A validation
# accuracy that falls while the loss keeps falling would mean that the model
# memorises its 3,500 training images instead of learning about clothes.


def plot_curve(values, ylabel, title):
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92)
    ax.plot(range(len(values)), values)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


def save_figure(fig, path, keep_open=False):
    """Save ``fig`` as a PNG; close it, unless it is kept open for plt.show()."""
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))  # the appendix
    if keep_open:
        fig.canvas.manager.set_window_title(path.name)
    else:
        plt.close(fig)  # frees its memory
    print(f"Saved {path.name}")


# =============================================================================
# 5. Beyond the tutorial: test set, probabilities, weights, confusions, saving
# =============================================================================
# The validation images measured the model after every epoch, and we look at
# those numbers to choose settings (see "Things to try" in the README), so
# they end up a little optimistic. The 10,000 test images give the final
# score: they were put aside when the data was loaded and used only here.
# They are also many more: with 500 validation images one image is 0.2
# points, and chance alone moves the accuracy by about 1.6 points either way
# (the standard error, sqrt(0.84 * 0.16 / 500)); with 10,000 by about 0.4.
#
# Then three pictures of what the model does:
# - predictions.png: test images beside the ten probabilities that the model
#   gives them, wrong predictions in red;
# - weights.png: each class's row of 784 weights drawn as a 28 x 28 image, red
#   where a light pixel raises the class's score, blue where it lowers it;
# - confusion.png: how often each true class (row) is predicted as each class
#   (column); the diagonal holds the correct predictions.
#
# Finally, the trained weights are saved to model.pt and loaded back into a
# new model, as another program would use them.
PREDICTIONS_SHOWN = 12  # test images that predictions.png draws


def confusion_matrix(labels, predicted, n_classes=len(CLASSES)):
    """counts[i, j]: how many images of class i were predicted as class j."""
    counts = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=labels.device)
    # Add 1 at (true class, predicted class) for each image; accumulate=True makes
    # repeated pairs add up instead of overwriting one another.
    return counts.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)


def accuracy_per_class(counts):
    """The accuracy in % on each true class, None for a class with no images."""
    return [100 * row[i] / sum(row) if sum(row) else None for i, row in enumerate(counts.tolist())]


def draw_probabilities(ax, probabilities, true_class=None):
    """A bar for each class: the most probable one dark, the true one blue, a wrong guess red."""
    guess = probabilities.argmax().item()
    colors = ["lightgray"] * len(CLASSES)
    colors[guess] = "dimgray"
    if true_class is not None:
        colors[true_class] = "tab:blue"
        if guess != true_class:
            colors[guess] = "tab:red"
    ax.barh(range(len(CLASSES)), probabilities.tolist(), color=colors)
    ax.set_xlim(0, 1)
    ax.set_xticks([0, 0.5, 1], ["0", "50%", "100%"], fontsize=7)
    ax.set_yticks(range(len(CLASSES)), CLASSES, fontsize=7)
    ax.invert_yaxis()  # class 0 at the top


def plot_predictions(images, labels, probabilities, per_row=3):
    """Each image beside a bar chart of its ten class probabilities."""
    n_rows = math.ceil(len(images) / per_row)
    fig, axes = plt.subplots(n_rows, 2 * per_row, figsize=(13, 2.3 * n_rows + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.5] * per_row})
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.4 / fig.get_figheight(),
                        top=1 - 0.7 / fig.get_figheight(), wspace=0.45, hspace=0.45)
    rows = zip(as_pictures(images), labels.tolist(), probabilities.cpu())
    for i, (picture, label, probs) in enumerate(rows):
        image_ax, bar_ax = axes.flat[2 * i], axes.flat[2 * i + 1]
        guess = probs.argmax().item()
        image_ax.imshow(picture, cmap="gray")
        image_ax.set_axis_off()
        image_ax.set_title(f"{CLASSES[guess]} {probs[guess].item():.0%}\n(true: {CLASSES[label]})",
                           color="tab:red" if guess != label else "black", fontsize=9)
        draw_probabilities(bar_ax, probs, label)
    for ax in axes.flat[2 * len(images):]:
        ax.set_axis_off()
    fig.suptitle("Predicted probabilities for the first test images: "
                 "blue is the true class, red a wrong prediction")
    return fig


def plot_weights(weight):
    """The ten rows of the weight matrix as 28 x 28 images, on one colour scale centred at 0."""
    limit = weight.abs().max().item()
    fig, axes = plt.subplots(2, 5, figsize=(10, 4.6))
    fig.subplots_adjust(left=0.02, right=0.86, bottom=0.03, top=0.85, hspace=0.25)
    for ax, template, name in zip(axes.flat, as_pictures(weight), CLASSES):
        shown = ax.imshow(template, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(name)
        ax.set_axis_off()
    fig.colorbar(shown, cax=fig.add_axes((0.89, 0.1, 0.02, 0.68)), label="weight")
    fig.suptitle("Learned weights per class: red where a light pixel raises the class's score, "
                 "blue where it lowers it", fontsize=11)
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
    """Save the learned tensors (the state_dict): the class itself is in this file."""
    state = {name: tensor.cpu() for name, tensor in model.state_dict().items()}  # loads without a GPU
    write_atomically(path, lambda tmp: torch.save(state, tmp))  # the appendix


def load_model(path, device="cpu"):
    """A new SoftmaxClassifier with the weights saved in ``path``, on ``device``."""
    model = SoftmaxClassifier()
    # weights_only=True loads tensors and nothing else: a .pt file could also hold code to run.
    model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return model.to(device)


# =============================================================================
# 6. Putting it together
# =============================================================================
# The tutorial's program: sections 1 to 5, in order. ``settings`` holds the
# values of the command line's flags (see the appendix); the defaults are the
# tutorial's. The trained model is saved as soon as training ends, so that
# nothing that happens later can lose it.


def run_tutorial(settings, stop=None):
    """Train, plot and save as the tutorial does; return what metrics.json records."""
    out, show = settings.out_dir, settings.show
    # Where tensors live and compute: "cpu", or an accelerator such as "cuda".
    # model.to(device) and tensor.to(device) move them there.
    device = torch.device(settings.device)
    stop = stop or GracefulStop()  # the appendix: Ctrl-C asks training to stop after a step

    # 1. Prepare the data. The test images are checked now and then put aside for section 5.
    images, labels = load_fashion_mnist(settings.data_dir, train=True, count=settings.train_size)
    test_images, test_labels = load_fashion_mnist(settings.data_dir, train=False)
    (train_images, train_labels), (val_images, val_labels) = split(images, labels, settings.val_size)
    print(f"Images: {len(train_images):,} to train, {len(val_images):,} to validate, "
          f"{len(test_images):,} to test, each a row of {train_images.shape[1]} pixels")
    save_figure(plot_samples(train_images[:10], train_labels[:10]), out / "samples.png", show)

    # 2. Build the model. Seeding first fixes its random starting weights.
    torch.manual_seed(settings.seed)
    model = SoftmaxClassifier().to(device)
    describe(model)

    # 3. Train the model, then save it at once.
    train_images, train_labels = train_images.to(device), train_labels.to(device)
    val_images, val_labels = val_images.to(device), val_labels.to(device)
    start = time.perf_counter()
    with stop.during_training():
        history = fit(model, (train_images, train_labels), (val_images, val_labels),
                      epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size,
                      shuffle_seed=settings.seed if settings.shuffle else None,
                      log_every=settings.log_every, should_stop=stop.requested)
    save_model(model, out / "model.pt")
    record = new_record(settings, history, stop.requested(), time.perf_counter() - start)  # the appendix
    save_json(record, out / "metrics.json")
    if stop.requested():
        print(f"{stop.signal_name()} stopped training in epoch {record['epochs_run'] - 1}: "
              f"finishing the run with the model as it is (Ctrl-C again quits at once).", flush=True)
    print("Saved model.pt and metrics.json")
    follow_one_image(model, val_images[0], val_labels[0])  # section 2's check, on the trained model

    # 4. Plot the results.
    save_figure(plot_curve(history["train_loss"], "mean cross-entropy loss", "Training loss per epoch"),
                out / "loss.png", show)
    save_figure(plot_curve(history["val_accuracy"], "accuracy (%)",
                           f"Validation accuracy per epoch ({len(val_images)} images)"),
                out / "accuracy.png", show)

    # 5. Beyond the tutorial.
    test_images, test_labels = test_images.to(device), test_labels.to(device)
    predicted, test_accuracy, test_loss = evaluate(model, test_images, test_labels)
    counts = confusion_matrix(test_labels, predicted).cpu()
    per_class = accuracy_per_class(counts)
    print(f"Test set ({len(test_labels):,} images): accuracy {test_accuracy:.1f}%, mean loss {test_loss:.4f}")
    for name, accuracy in zip(CLASSES, per_class):
        print(f"  {name:<12} " + ("no images" if accuracy is None else f"{accuracy:5.1f}%"))
    shown = slice(0, PREDICTIONS_SHOWN)
    save_figure(plot_predictions(test_images[shown], test_labels[shown], model.predict_proba(test_images[shown])),
                out / "predictions.png", show)
    save_figure(plot_weights(model.linear.weight), out / "weights.png", show)
    save_figure(plot_confusion(counts), out / "confusion.png", show)
    reloaded = load_model(out / "model.pt", device)
    reloaded_predicted, _, _ = evaluate(reloaded, test_images, test_labels)
    print(f"Loaded model.pt into a new model: it predicts the same test classes: "
          f"{torch.equal(reloaded_predicted, predicted)}")
    record.update(test_accuracy=test_accuracy, test_loss=test_loss,
                  test_accuracy_per_class=dict(zip(CLASSES, per_class)))
    save_json(record, out / "metrics.json")
    print("Saved metrics.json, now with the test results")
    if show:
        plt.show()
    return record


# =============================================================================
# 7. Use the model
# =============================================================================
# A trained model is meant to be used on new pictures, a photo of a shoe, say.
# But it knows only what it saw: centred garments, light on a black
# background, 28 x 28 pixels, in greyscale. A picture has to be prepared the
# way Fashion-MNIST's own images were made from a shop's product photos. The
# dataset's authors list the steps (Xiao, Rasul and Vollgraf, 2017, section 2),
# and ``prepare_picture`` takes them in order, with torchvision's transforms:
#
# 1. trim the edges that have the colour of the corner pixels;
# 2. resize the longest edge to 28 pixels;
# 3. sharpen;
# 4. extend the shortest edge to 28 and put the image in the centre;
# 5. negate the intensities;
# 6. convert to 8-bit greyscale.
#
# It negates only pictures with a light background, as product photos have;
# one that is already light on dark stays as it is. ``predict.png`` shows each
# picture next to the 28 x 28 image that the model sees: that image, not the
# photo, is what the model judges.
PICTURES_SHOWN = 12  # pictures that predict.png draws


def on_white(picture):
    """A C x H x W picture of any bit depth as floats in [0, 1]; transparent parts become white."""
    picture = v2.functional.to_dtype(picture, torch.float32, scale=True)
    if picture.shape[0] in (2, 4):  # channels: grey, or red, green and blue; then alpha (opacity)
        colour, alpha = picture[:-1], picture[-1:]
        picture = colour * alpha + (1 - alpha)  # opaque: the colour; transparent: white
    return picture


def prepare_picture(picture):
    """A picture (C x H x W tensor, as decode_image gives) as a Fashion-MNIST image: 1 x 28 x 28 in [0, 1]."""
    picture = on_white(picture)
    background = picture[:, [0, 0, -1, -1], [0, -1, 0, -1]].median(dim=1).values  # the corners' colour
    # 1. Trim: keep the box around the pixels that differ from the background by more than
    #    a tenth of the range, which is more than a JPEG file's noise.
    rows, cols = ((picture - background[:, None, None]).abs().amax(dim=0) > 0.1).nonzero(as_tuple=True)
    if len(rows):
        picture = picture[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    # 2. Resize: with size=None, max_size scales the longest edge to 28 and keeps the proportions.
    picture = v2.Resize(size=None, max_size=IMAGE_SIDE)(picture)
    # 3. Sharpen. The paper does not say how much: 2 kept the most predictions in our round trip.
    picture = v2.functional.adjust_sharpness(picture.clamp(0, 1), sharpness_factor=2)
    # 4. Extend to 28 x 28 with the background's colour, centred as in the dataset: an odd
    #    margin's extra pixel goes left (or on top). This model is so sensitive to position
    #    that one pixel matters.
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
    fig, axes = plt.subplots(len(pictures), 3, figsize=(8, 1.9 * len(pictures) + 0.5), squeeze=False,
                             gridspec_kw={"width_ratios": [1.4, 1, 1.6]})
    fig.subplots_adjust(left=0.01, right=0.98, bottom=0.35 / fig.get_figheight(),
                        top=1 - 0.55 / fig.get_figheight(), wspace=0.35, hspace=0.5)
    for (given_ax, seen_ax, bar_ax), name, picture, image, probs in zip(
            axes, names, pictures, prepared, probabilities):
        given_ax.imshow(on_white(picture).permute(1, 2, 0).squeeze().numpy(), cmap="gray")  # H x W x C
        given_ax.set_title(name, fontsize=9)
        seen_ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
        seen_ax.set_title("what the model sees", fontsize=9)
        for ax in (given_ax, seen_ax):
            ax.set_axis_off()
        draw_probabilities(bar_ax, probs)
    fig.suptitle("Your pictures, prepared as Fashion-MNIST's images were, and the model's probabilities")
    return fig


def classify_pictures(model, paths, out_dir, show=False):
    """Print the three most probable classes of each picture file, and draw predict.png."""
    pictures = [read_picture(path) for path in paths]  # the appendix: decode_image, with clear errors
    prepared = torch.stack([prepare_picture(picture) for picture in pictures])
    device = model.linear.weight.device  # where the model is
    probabilities = model.predict_proba(prepared.to(device)).cpu()
    for path, probs in zip(paths, probabilities):
        print(f"{path.name}: {top_classes(probs)}")
    shown = slice(0, PICTURES_SHOWN)
    names = [path.name for path in paths[shown]]
    fig = plot_pictures(names, pictures[shown], prepared[shown], probabilities[shown])
    save_figure(fig, out_dir / "predict.png", show)
    if show:
        plt.show()
    return probabilities


# =============================================================================
# Appendix: the command line and the safety net
# =============================================================================
# Everything above is the tutorial. What follows makes it a program that is
# kind to its users: the flags and their checks, an offline copy of the data,
# checks of the dataset's files, files that are never left half-written, and
# Ctrl-C. Every problem that a user can fix ends in one line on stderr, naming
# what is wrong and what to do, and a non-zero exit status.

import argparse  # noqa: E402  (the appendix's own imports, kept out of the story above)
import contextlib  # noqa: E402
import gzip  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import zlib  # noqa: E402

import matplotlib  # noqa: E402
import torchvision  # noqa: E402
from matplotlib.backends import BackendFilter, backend_registry  # noqa: E402
from torchvision.io import ImageReadMode  # noqa: E402

PROG = Path(__file__).name
HERE = Path(__file__).resolve().parent  # the default folders are the repository's own
FULL_TRAIN_SIZE = 60_000  # images in the training split


class UserError(Exception):
    """Something the user can fix; main() prints it as one line and exits with status 1."""


# --- Speed ---

@contextlib.contextmanager
def one_cpu_thread():
    """Run the block on one CPU thread, then give the threads back.

    A step on 16 images is too small to share between cores: splitting it
    costs more than it saves, and with the cores busy, PyTorch's threads wait
    for each other. fit() uses this, so that it trains as fast when a notebook
    calls it as when the script does.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# --- Files are never left half-written ---

def write_atomically(path, write):
    """Call ``write(tmp)`` on a new temporary file beside ``path``, then rename it to ``path``.

    ``path`` is always either the complete new file or what was there before,
    whatever happens during the write, and runs side by side never share a
    temporary file. The temporary file is removed on any error or signal.
    """
    tmp = None
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        tmp = Path(name)
        os.close(fd)
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private; give it the usual permissions
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
        raise UserError(f"could not write {path}: {error}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def save_json(data, path):
    """Strict JSON: a NaN or infinity would be a bug, so it raises instead of writing ``NaN``."""
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n"))


def new_record(settings, history, interrupted, train_seconds):
    """What metrics.json holds after training; the test results are added at the end of the run."""
    return {
        "settings": {key: str(value) if isinstance(value, Path) else value
                     for key, value in vars(settings).items() if key != "predict"},
        "interrupted": interrupted,
        "epochs_run": len(history["train_loss"]),
        "train_loss": history["train_loss"],
        "val_accuracy": history["val_accuracy"],
        "final_val_accuracy": history["val_accuracy"][-1],
        "test_accuracy": None,
        "test_loss": None,
        "test_accuracy_per_class": None,
        "train_seconds": round(train_seconds, 3),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
    }


# --- The dataset: an offline copy, and checks of its files ---
# The four files that torchvision reads, with the MD5 checksums of the
# original, decompressed files, and where Debian's package
# ``dataset-fashion-mnist`` keeps gzipped copies of them for machines
# without internet. Debian recompressed them, so torchvision would reject the
# ``.gz`` files' checksums; decompressed under the names that torchvision
# looks for, they are taken as downloaded.
RAW_FILES = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
REFETCH = "delete it and run again to fetch a fresh copy"


def open_fashion_mnist(data_dir, train, count=None):
    """torchvision's FashionMNIST dataset of one split, its files checked, from the offline copy if need be."""
    raw_dir = Path(data_dir) / "FashionMNIST" / "raw"
    try:
        copy_offline_files(raw_dir)
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

    labels_file = raw_dir / ("train-labels-idx1-ubyte" if train else "t10k-labels-idx1-ubyte")
    bad = ((dataset.targets < 0) | (dataset.targets >= len(CLASSES))).nonzero()
    if len(bad):
        i = bad[0].item()
        raise UserError(f"{labels_file} is damaged: label {i} is {dataset.targets[i].item()}, but the "
                        f"classes are numbered 0 to {len(CLASSES) - 1}; {REFETCH}")
    if count is not None and count > len(dataset.data):
        raise UserError(f"asked for {count:,} images, but {raw_dir} holds only {len(dataset.data):,}")
    return dataset


def copy_offline_files(raw_dir):
    """Decompress the files missing from ``raw_dir`` from Debian's copy, when there is one, and verify them."""
    missing = [name for name in RAW_FILES if not (raw_dir / name).exists()]
    sources = [DEBIAN_DIR / f"{name}.gz" for name in missing]
    if not missing or not all(source.exists() for source in sources):
        return
    print(f"Decompressing the offline copy of Fashion-MNIST from {DEBIAN_DIR} into {raw_dir}")
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name, source in zip(missing, sources):
        write_atomically(raw_dir / name, lambda tmp: decompress_verified(source, tmp, RAW_FILES[name]))


def decompress_verified(source, target, md5):
    """Decompress ``source`` into ``target``; raise UserError unless the result has the original's MD5."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with gzip.open(source) as compressed, open(target, "wb") as out:
            while chunk := compressed.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise UserError(f"cannot decompress {source} ({error}): reinstall it with "
                        f"'apt-get install --reinstall dataset-fashion-mnist'") from None
    if digest.hexdigest() != md5:
        raise UserError(f"{source} does not decompress to the original Fashion-MNIST file (its MD5 checksum "
                        f"differs): reinstall it with 'apt-get install --reinstall dataset-fashion-mnist'")


def check_idx_file(path):
    """Raise UserError unless ``path`` holds as many bytes as its IDX header announces.

    Each file starts with a magic number (two zero bytes, the type 0x08 for
    unsigned bytes, and the number of dimensions) and the size of each
    dimension; the data follows. A download cut short fails this check.
    """
    with open(path, "rb") as f:
        header = f.read(4)
        n_dims = header[3] if len(header) == 4 else 0
        sizes = f.read(4 * n_dims)
    if header[:3] != b"\x00\x00\x08" or n_dims not in (1, 3) or len(sizes) != 4 * n_dims:
        raise UserError(f"{path} is not a Fashion-MNIST file (its header is damaged): {REFETCH}")
    dims = [int.from_bytes(sizes[i:i + 4], "big") for i in range(0, len(sizes), 4)]
    expected = 4 + 4 * n_dims + math.prod(dims)
    actual = path.stat().st_size
    if actual != expected:
        raise UserError(f"{path} is truncated or corrupt ({actual:,} bytes instead of {expected:,}): {REFETCH}")


# --- Pictures and models for --predict ---

def read_picture(path):
    """The picture in a PNG, JPEG, GIF or WebP file, as a C x H x W uint8 tensor, turned as the camera meant."""
    if not path.is_file():
        raise UserError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    try:
        return decode_image(str(path), mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True)
    except RuntimeError:
        raise UserError(f"{path} is not a picture that torchvision can read (PNG, JPEG, GIF or WebP)") from None


def load_trained_model(path, device):
    """load_model(), with one clear line when there is no model yet or the file holds another one."""
    if not path.is_file():
        command = f"python {PROG}" + (f" --out-dir {path.parent}" if path.parent != OUT_DIR else "")
        raise UserError(f"no trained model at {path} yet: train one first with '{command}'")
    try:
        return load_model(path, device)
    except Exception as error:  # torch.load's errors vary with what the file holds instead
        message = str(error)
        if "loading state_dict" in message:  # then the next line says what differs
            reason = message.splitlines()[1].strip()
        else:
            reason = "torch.load cannot read it"
        raise UserError(f"{path} does not hold this tutorial's model ({reason}): "
                        f"train a new one with 'python {PROG}'") from None


# --- Ctrl-C and SIGTERM ---
# The first Ctrl-C (SIGINT) or SIGTERM (what `kill`, a job scheduler or a
# container runtime sends) during training stops it at the end of the current
# step; the run then finishes with the model as it is, as if that epoch were
# the last, and exits with 130 or 143. Any other such signal quits at once,
# and files being written are removed on the way out.
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal's number, as shells report


class Interrupted(KeyboardInterrupt):
    """Raised by a signal that quits at once; remembers which one for the exit status."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def quit_at_once(signum, frame):
    for other in EXIT_STATUS:  # already quitting: let further signals not cut the cleanup short
        signal.signal(other, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def handling_signals(handler):
    """Let ``handler`` take SIGINT and SIGTERM during the block (main thread only), then restore the old ones."""
    previous = {}
    with contextlib.suppress(ValueError):  # signal.signal works only in the main thread
        for signum in EXIT_STATUS:
            if signal.getsignal(signum) is not signal.SIG_IGN:  # a signal ignored by the caller stays so
                previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


class GracefulStop:
    """Turns the first Ctrl-C or SIGTERM during training into a request that fit() honours after a step."""

    def __init__(self):
        self.signum = None

    def requested(self):
        return self.signum is not None

    def signal_name(self):
        return signal.Signals(self.signum).name

    def during_training(self):
        return handling_signals(self._request)

    def _request(self, signum, frame):
        self.signum = signum
        for other in EXIT_STATUS:  # a second signal quits at once
            signal.signal(other, quit_at_once)


# --- The command line ---
DATA_DIR = HERE / "data"
OUT_DIR = HERE / "outputs"


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        """One line on stderr and exit status 2, instead of argparse's usage block."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):
        """Each flag's default in --help, but for switches and --predict, which have none to show."""
        return action.help if action.default in (None, False) else super()._get_help_string(action)


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


def parse_args(argv=None):
    parser = ArgumentParser(
        prog=PROG,
        description="Train a Softmax classifier (one linear layer) on Fashion-MNIST, then plot and "
                    "save what it learned; or, with --predict, classify pictures with the saved model.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--epochs", metavar="N", type=positive_int, default=EPOCHS,
                        help="passes over the training images")
    parser.add_argument("--lr", type=positive_float, default=LEARNING_RATE,
                        help="learning rate of stochastic gradient descent")
    parser.add_argument("--batch-size", metavar="N", type=positive_int, default=BATCH_SIZE,
                        help="training images per gradient step")
    parser.add_argument("--shuffle", action="store_true",
                        help="a new random order of the training images every epoch, drawn with --seed")
    parser.add_argument("--train-size", metavar="N", type=positive_int, default=TRAIN_SIZE,
                        help=f"how many of the first training-split images to use (at most {FULL_TRAIN_SIZE:,}), "
                             "validation images included")
    parser.add_argument("--val-size", metavar="N", type=positive_int, default=VAL_SIZE,
                        help="how many of those, taken from the end, to hold out for validation")
    parser.add_argument("--seed", metavar="N", type=seed_int, default=0,
                        help="seed for torch.manual_seed, set right before the model is built")
    parser.add_argument("--data-dir", metavar="DIR", type=Path, default=DATA_DIR,
                        help="where torchvision keeps Fashion-MNIST (FashionMNIST/raw/ inside it)")
    parser.add_argument("--out-dir", metavar="DIR", type=Path, default=OUT_DIR,
                        help="where the figures, model.pt and metrics.json go, and where --predict finds model.pt")
    parser.add_argument("--device", default="cpu",
                        help="where to train: cpu, an accelerator such as cuda or mps, or auto for this "
                             "machine's accelerator when it has one (the README says why cpu is the default)")
    parser.add_argument("--log-every", metavar="N", type=positive_int, default=10,
                        help="print progress every this many epochs, and after the last")
    parser.add_argument("--show", action="store_true",
                        help="also show the figures at the end, in windows or in a notebook")
    parser.add_argument("--predict", metavar="IMAGE", nargs="+", type=Path,
                        help="instead of training, classify these picture files with the saved model.pt")
    args = parser.parse_args(argv)

    if args.train_size > FULL_TRAIN_SIZE:
        parser.error(f"argument --train-size: at most {FULL_TRAIN_SIZE} (the size of the "
                     f"training split), got {args.train_size}")
    if args.val_size >= args.train_size:
        parser.error(f"argument --val-size: must be smaller than --train-size ({args.train_size}) "
                     f"to leave images for training, got {args.val_size}")
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    available = ["cpu"] + ([accelerator.type] if accelerator else [])
    if args.device == "auto":
        args.device = available[-1]
    elif args.device not in available:
        parser.error(f"argument --device: {args.device} is not available on this machine "
                     f"(available: {', '.join(available)})")
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


def can_show_figures():
    """False where matplotlib fell back to a backend that only draws to files: no display here."""
    return plt.get_backend().lower() not in backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE)


def main(argv=None):
    """Run the tutorial (or --predict) with the command line's flags; return the exit status."""
    try:
        args = parse_args(argv)
    except SystemExit as exit_:  # --help, or a bad flag: a notebook gets the status instead of an exit
        return exit_.code
    if args.show and not can_show_figures():
        print("--show: no display here, so the figures are only saved, not shown.")
        args.show = False
    elif not args.show and matplotlib.get_backend(auto_select=False) is None:
        # Only saving, and neither a notebook nor MPLBACKEND chose a backend: draw with Agg,
        # which makes no window behind each figure (0.5 s less for six figures on a desktop).
        matplotlib.use("agg")
    stop = GracefulStop()
    try:
        with handling_signals(quit_at_once):  # SIGTERM too cleans up on its way out, as Ctrl-C does
            if args.predict:
                model = load_trained_model(args.out_dir / "model.pt", args.device)
                classify_pictures(model, args.predict, args.out_dir, args.show)
                return 0
            prepare_folders(args.data_dir, args.out_dir)
            print(f"Figures, model.pt and metrics.json go to {args.out_dir.resolve()}")
            run_tutorial(args, stop)
    except UserError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:  # a signal that quits at once
        signum = getattr(interrupt, "signum", signal.SIGINT)
        print(f"\nInterrupted by {signal.Signals(signum).name}.", file=sys.stderr)
        return EXIT_STATUS[signum]
    except BrokenPipeError:  # the output went to a program that stopped reading, `| head` say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that exiting stays quiet
        return 1
    return EXIT_STATUS[stop.signum] if stop.requested() else 0


if __name__ == "__main__":
    status = main()
    if "IPython" in sys.modules or sys.flags.interactive:  # %run in a notebook, or python -i:
        sys.exit(status)                                    # Python goes on, so exit as usual
    # Everything is saved and closed. Python's usual exit would now tear torch's
    # libraries down, which took a second here and 80 MB more memory than the
    # whole run had needed. os._exit skips that, once what was printed is out.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
