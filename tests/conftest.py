"""Test-wide settings.

The suite runs as two xdist workers on two cores. Each worker uses one intra-op thread: two
processes each spinning two OpenMP threads on two cores made small tensor ops ~40x slower here.
"""

import os

import torch

torch.set_num_threads(int(os.environ.get("EXTRADIM_TEST_THREADS", "1")))
