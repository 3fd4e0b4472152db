"""The original tutorial's training loop, as a function, beside the script's.

The original keeps the data as a Python list of (image tensor, label) pairs
made by ``transforms.ToTensor()`` and trains through a ``DataLoader`` over that
list. The script cuts batches from one tensor instead. Both are used by the
equivalence test and by ``benchmark_training.py``.
"""
import time

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

import softmax_fashion as sf


def tutorial_style_data(data_dir, train_size=4000, val_size=500):
    """(train pairs, validation pairs), as lists of (1x28x28 float image, int label)."""
    dataset = datasets.FashionMNIST(data_dir, train=True, download=True, transform=transforms.ToTensor())
    pairs = [dataset[i] for i in range(train_size)]
    n_train = train_size - val_size
    return pairs[:n_train], pairs[n_train:]


def tutorial_style_training(train_pairs, val_pairs, epochs, seed=0, lr=0.01, batch_size=16):
    """Train as the tutorial does; return (model, validation accuracy per epoch, seconds)."""
    torch.manual_seed(seed)
    model = sf.SoftmaxClassifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    train_loader = DataLoader(train_pairs, batch_size=batch_size)
    val_loader = DataLoader(val_pairs, batch_size=batch_size)
    accuracies = []
    start = time.perf_counter()
    for _ in range(epochs):
        for images, labels in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(images.view(-1, 28 * 28)), labels)
            loss.backward()
            optimizer.step()
        correct = 0
        with torch.no_grad():
            for images, labels in val_loader:
                correct += (model(images.view(-1, 28 * 28)).argmax(dim=1) == labels).sum().item()
        accuracies.append(100 * correct / len(val_pairs))
    return model, accuracies, time.perf_counter() - start


def script_training(tutorial_data, epochs, seed=0, **fit_args):
    """Train with the script's own functions; return (model, history, seconds)."""
    torch.manual_seed(seed)
    model = sf.SoftmaxClassifier()
    start = time.perf_counter()
    history = sf.fit(model, *tutorial_data, epochs=epochs, log_every=epochs, **fit_args)
    return model, history, time.perf_counter() - start
