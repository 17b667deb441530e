"""Shared test setup: a per-session cache folder so the built-in glyph dataset is generated once."""
import os

import pytest
import torch

# Few-shot models are tiny: one intra-op thread beats two (OpenMP spin-waits) on a shared 2-core CI box.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _metakd_cache(tmp_path_factory):
    if "METAKD_TEST_CACHE" in os.environ:  # reuse across local runs when set
        os.environ["METAKD_CACHE"] = os.environ["METAKD_TEST_CACHE"]
    else:
        os.environ["METAKD_CACHE"] = str(tmp_path_factory.mktemp("metakd_cache"))
    yield
