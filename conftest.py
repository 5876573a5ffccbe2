"""Test-session settings shared by tests/ and the doctests in src/."""

import torch

# The test problems are tiny: one thread avoids the intra-op threading overhead that dominates
# their run time (and is pathological when the machine is busy).
torch.set_num_threads(1)
