import pytest
import torch

# Per-dtype tolerances for results that sum `terms` values of magnitude about 1: the absolute tolerance
# grows with the number of summed terms, the relative one is a few ulps of accumulated rounding.
TOLERANCES = {torch.float64: (1e-10, 1e-12), torch.float32: (1e-5, 2e-6)}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, terms: int, what: str = "") -> None:
    rtol, atol_per_term = TOLERANCES[expected.dtype]
    torch.testing.assert_close(
        actual, expected, rtol=rtol, atol=atol_per_term * max(1, terms), msg=lambda m: f"{what}: {m}"
    )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
