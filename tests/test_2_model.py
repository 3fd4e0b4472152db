"""Section 2: the model, its logits and probabilities, and one image followed by hand."""
import pytest
import torch

import softmax_fashion as sf


def test_parameters_have_the_tutorials_shapes():
    shapes = {name: tuple(t.shape) for name, t in sf.SoftmaxClassifier().state_dict().items()}
    assert shapes == {"linear.weight": (10, 784), "linear.bias": (10,)}


@pytest.mark.parametrize("shape", [(5, 784), (5, 1, 28, 28), (5, 28, 28)])
def test_logits_are_n_by_10_for_any_image_shape(shape):
    torch.manual_seed(0)
    model = sf.SoftmaxClassifier()
    images = torch.rand(shape)
    logits = model(images)
    assert logits.shape == (5, 10)
    assert torch.equal(logits, model(images.reshape(5, 784)))


def test_probabilities_are_a_softmax_of_the_logits(tutorial_data):
    (images, _), _ = tutorial_data
    torch.manual_seed(0)
    model = sf.SoftmaxClassifier()
    probabilities = model.predict_proba(images[:64])
    assert probabilities.shape == (64, 10)
    assert (probabilities >= 0).all()
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(64))
    assert torch.equal(probabilities.argmax(dim=1), model(images[:64]).argmax(dim=1))
    assert not probabilities.requires_grad


def test_pixels_left_at_0_to_255_are_refused_not_silently_classified(tutorial_data):
    (images, _), _ = tutorial_data
    with pytest.raises(ValueError, match=r"\[0, 1\].*divide them by 255"):
        sf.SoftmaxClassifier().predict_proba(images[:4] * 255)


def test_the_softmax_loss_and_gradient_by_hand_equal_pytorchs(trained_model, tutorial_data, capsys):
    _, (val_images, val_labels) = tutorial_data
    for i in range(5):  # a few images, right and wrong
        differences = sf.follow_one_image(trained_model, val_images[i], val_labels[i])
        assert set(differences) == {"torch.softmax", "nn.CrossEntropyLoss", "autograd"}
        assert all(0 <= difference < 1e-6 for difference in differences.values()), differences
    printed = capsys.readouterr().out
    assert printed.count("by hand:") == 5 and "largest difference from PyTorch" in printed


def test_what_follow_one_image_prints_is_the_real_softmax_loss_and_gradient(trained_model, tutorial_data, capsys):
    # Independently of the function, from PyTorch's own operations: the printed numbers are these.
    _, (val_images, val_labels) = tutorial_data
    image, label = val_images[0], val_labels[0]
    sf.follow_one_image(trained_model, image, label)
    lines = {line.split("  ")[1].strip(): line for line in capsys.readouterr().out.splitlines()[1:5]}

    logits = trained_model(image.unsqueeze(0))[0].detach().requires_grad_()
    loss = torch.nn.functional.cross_entropy(logits.unsqueeze(0), label.unsqueeze(0))
    loss.backward()
    numbers = lambda line: [float(x) for x in line.split()[-10:]]  # noqa: E731
    assert numbers(lines["logits z"]) == pytest.approx(logits.tolist(), abs=0.006)
    assert numbers(lines["softmax p"]) == pytest.approx(torch.softmax(logits, 0).tolist(), abs=0.006)
    assert numbers(lines["gradient p - one_hot"]) == pytest.approx(logits.grad.tolist(), abs=0.006)
    assert float(lines[f"loss -log p[{label.item()}]"].split()[-1]) == pytest.approx(loss.item(), abs=1e-4)
    assert abs(sum(logits.grad.tolist())) < 1e-6  # p sums to 1 and one_hot to 1: the gradient sums to 0
