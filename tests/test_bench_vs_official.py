"""The speed comparison with the authors' code (benchmarks/official/): the step rule shared by
both sides, the image subset, the table, and the timed `ltpll train` run. The torch side needs a
torch venv and the authors' checkout, so it is not run here."""

import io
import json
import os
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks", "official"))

import bench_vs_official  # noqa: E402
import ltpll_step  # noqa: E402
from steps import batches_needed, step_intervals, summary  # noqa: E402


def test_intervals_skip_warmup_and_epoch_ends():
    # batch ends: epoch 0 at 0, 1, 3, 6 s; epoch 1 at 16 (after a 10 s epoch end), 21 s
    stamps = [(0, 0.0), (0, 1.0), (0, 3.0), (0, 6.0), (1, 16.0), (1, 21.0)]
    assert step_intervals(stamps, warmup=2, steps=10) == [2000.0, 3000.0, 5000.0]
    assert step_intervals(stamps, warmup=0, steps=2) == [1000.0, 2000.0]
    assert step_intervals(stamps, warmup=5, steps=10) == [5000.0]


def test_batches_needed_is_the_fewest_that_give_every_step():
    for per_epoch in (2, 3, 7, 11, 46):
        total = batches_needed(3, 12, per_epoch)
        run = [(k // per_epoch, float(k)) for k in range(total + 5)]
        assert len(step_intervals(run[:total], 3, 12)) == 12
        assert len(step_intervals(run[:total - 1], 3, 12)) == 11
    with pytest.raises(ValueError, match="one batch per epoch"):
        batches_needed(3, 12, 1)


def test_summary_counts_images_not_views():
    result = summary([100.0, 300.0, 200.0], batch_size=64)
    assert result["median_ms"] == 200.0
    assert result["images_per_s"] == pytest.approx(320.0)


def test_table_pairs_rounds():
    rounds = [{"ltpll": {"ms_per_step": [100.0]}, "official": {"ms_per_step": [200.0]}},
              {"ltpll": {"ms_per_step": [100.0]}, "official": {"ms_per_step": [400.0]}},
              {"ltpll": {"ms_per_step": [300.0]}, "official": {"ms_per_step": [300.0]}}]
    rows = bench_vs_official.table(rounds, batch_size=10).splitlines()
    assert rows[2] == "| ltpll | 100 | 33.3 / 100.0 / 100.0 | 1.00 - 4.00 |"
    assert rows[3] == "| official | 300 | 25.0 / 33.3 / 50.0 | 1 (reference) |"


def _tarball(path, per_class):
    """A tiny tarball laid out as the shared CIFAR-10 one; pixel value = file number."""
    with tarfile.open(path, "w:gz") as archive:
        for split, count in per_class.items():
            for name in ("b_class", "a_class"):
                for number in reversed(range(count)):
                    buffer = io.BytesIO()
                    Image.fromarray(np.full((4, 4, 3), number, np.uint8)).save(buffer, "PNG")
                    info = tarfile.TarInfo(f"{split}/{name}/{number:04d}.jpg")
                    info.size = len(buffer.getvalue())
                    archive.addfile(info, io.BytesIO(buffer.getvalue()))


def test_prepare_images_takes_the_first_files_of_each_class_once(tmp_path):
    tarball = tmp_path / "c.tar.gz"
    _tarball(tarball, {"train": 5, "test": 12})
    root = bench_vs_official.prepare_images(str(tarball), str(tmp_path / "cache"), images=6)
    for name in ("a_class", "b_class"):
        assert sorted(os.listdir(os.path.join(root, "train", name))) == [
            "0000.jpg", "0001.jpg", "0002.jpg"]
        assert len(os.listdir(os.path.join(root, "test", name))) == 10
        with Image.open(os.path.join(root, "train", name, "0002.jpg")) as image:
            assert np.asarray(image).max() == 2   # the bytes of that very file
    os.remove(tarball)   # made once: a second call does not read the tarball
    assert bench_vs_official.prepare_images(str(tarball), str(tmp_path / "cache"), 6) == root
    with pytest.raises(SystemExit, match="multiple of the 2 classes"):
        _tarball(tarball, {"train": 5, "test": 12})
        bench_vs_official.prepare_images(str(tarball), str(tmp_path / "cache"), images=5)


def test_driver_needs_a_checkout_and_a_torch_python(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        bench_vs_official.main(["--torch-python", sys.executable])
    assert stopped.value.code == 2
    assert "OFFICIAL=path/to/RECORDS-LTPLL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_vs_official.main(["--official", str(tmp_path), "--torch-python", sys.executable])
    assert "is not a RECORDS-LTPLL checkout: no models/resnet.py" in capsys.readouterr().err
    for name in ("models/resnet.py", "utils/utils_loss.py"):
        os.makedirs(tmp_path / os.path.dirname(name), exist_ok=True)
        (tmp_path / name).write_text("")
    with pytest.raises(SystemExit):
        bench_vs_official.main(["--official", str(tmp_path), "--torch-python",
                                str(tmp_path / "missing")])
    assert "--torch-python" in capsys.readouterr().err


def test_timed_ltpll_train_run(image_folder, tmp_path):
    """The real CLI run with the batch clock: 60 images at batch 8 make 7 steps an epoch, so 7
    timed steps after 1 warm-up take a second epoch (the gap across the epoch end is left out)."""
    out = tmp_path / "result.json"
    ltpll_step.main(["--data", image_folder, "--backbone", "tiny", "--batch-size", "8",
                     "--warmup", "1", "--steps", "7", "--json-out", str(out)])
    result = json.loads(out.read_text())
    assert len(result["ms_per_step"]) == 7 and min(result["ms_per_step"]) > 0
    assert result["images"] == 60
    assert "--method corr --records --backbone tiny --batch-size 8 --epochs 2 " \
           "--update-start 0" in result["command"]
    # The table says what the default flags chose here, as `ltpll train` decides it.
    from ltpll.assembly import use_jit, use_precision
    from ltpll.config import TrainConfig

    assert result["precision"] == use_precision(TrainConfig()) != "auto"
    assert result["jit_compile"] is use_jit(TrainConfig())
