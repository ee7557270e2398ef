"""An adder network learns real data (scikit-learn's 8x8 digits) with each fast backend, in seconds."""

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from slac.nn import Adder2d, scale_adder_grads
from slac.ops import available_backends


def _digits():
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    x = (x - x.mean()) / x.std()
    y = torch.tensor(labels)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def _adder_net(backend):
    # the AdderNet layout: full-precision first conv and classifier, BatchNorm after every adder layer
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        Adder2d(16, 32, 3, padding=1, backend=backend), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        Adder2d(32, 32, 3, padding=1, backend=backend), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip


def _fast_backends():
    """(backend, device) for every fast backend that runs natively here: cpu on the CPU, triton on CUDA."""
    cases = [(b, "cpu") for b in available_backends("cpu", interpreted=False) if b != "reference"]
    if torch.cuda.is_available():
        cases += [(b, "cuda") for b in available_backends("cuda", interpreted=False) if b != "reference"]
    return cases


@pytest.mark.parametrize("backend,device", _fast_backends(), ids=lambda v: str(v))
def test_adder_network_learns_digits(backend, device):
    (x_train, y_train), (x_test, y_test) = (tuple(t.to(device) for t in split) for split in _digits())
    model = _adder_net(backend).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    epochs, batch = 6, 64
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * (len(y_train) // batch))
    for _ in range(epochs):
        perm = torch.randperm(len(y_train), device=device)
        for start in range(0, len(y_train) - batch + 1, batch):
            idx = perm[start : start + batch]
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            scale_adder_grads(model, eta=0.2)
            optimizer.step()
            scheduler.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    print(f"{backend}: test accuracy {accuracy:.3f}")
    assert accuracy > 0.85, f"test accuracy {accuracy:.3f} (chance is 0.1)"
