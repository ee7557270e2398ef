import os

import pytest
import torch

# Without a GPU the Triton kernels run on CPU tensors through Triton's interpreter. Must be set before
# slac's Triton backend module is imported (triton.jit reads it when decorating); conftest runs first.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# One share of the cores per pytest-xdist worker: with two OpenMP threads per worker on a 2-core machine
# under -n 2, threads wait for each other and small ops take milliseconds (a ResNet-50 step 20x slower).
# The numba kernels follow torch's thread count.
torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


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
