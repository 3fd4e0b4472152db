"""Section 2: the model, its logits and its probabilities."""
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
