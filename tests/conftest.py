"""Shared test fixtures: tiny generated data, and the --runslow opt-in for slow checks."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image

from tests.helpers import FOLDER_CLASSES, PER_CLASS, tiny_pll_arrays


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session", autouse=True)
def float32_unless_asked():
    """``--precision auto`` resolves to float32 in every in-process test, so the numbers the
    tests compare do not depend on whether the CPU running them has native bf16 (where auto
    means mixed_bfloat16); the tests of that choice patch it back. Returns the real probe."""
    from ltpll import environment

    probe = environment.cpu_has_native_bf16
    with pytest.MonkeyPatch.context() as patch:   # session-wide: module fixtures train too
        patch.setattr(environment, "cpu_has_native_bf16", lambda *args: False)
        yield probe


@pytest.fixture
def tiny_pll_data():
    """32 random 16x16 images in 4 classes with candidate sets that contain the true label."""
    return tiny_pll_arrays()


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """train/<class>/*.png with 20 images per class, test/ with 6; class c is tinted by c."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, count in PER_CLASS.items():
        for c, name in enumerate(FOLDER_CLASSES):
            os.makedirs(root / split / name)
            for i in range(count):
                pixels = rng.integers(0, 120, (16, 16, 3)).astype(np.uint8)
                pixels[..., c] += 120
                Image.fromarray(pixels).save(root / split / name / f"{i:03d}.png")
    return str(root)
