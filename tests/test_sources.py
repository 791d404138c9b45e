import os
import tarfile
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ltpll.data import files, sources
from ltpll.data.sources import ImageSet, default_cache_dir, load_split
from ltpll.errors import LTPLLError
from tests.helpers import run_python

# The offline CIFAR-10 copy lives in shared/ beside the checkout (as on CI).
SHARED_TARBALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# train has three classes (written out of order), test lacks "ant": labels must follow train's list.
LAYOUT = {"train": {"dog": 2, "ant": 1, "cat": 3}, "test": {"cat": 1, "dog": 2}}


def make_folder(root: Path, layout=LAYOUT, size=(6, 4), ext="png", seed=0) -> dict:
    """Write random images; return ``{(split, "class/file"): array}`` to compare against."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, classes in layout.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                array = _image(rng, size)
                Image.fromarray(array).save(root / split / name / f"{i:02d}.{ext}", quality=95)
                written[(split, f"{name}/{i:02d}.{ext}")] = array
    return written


def _image(rng, size):
    """A smooth random image (JPEG-friendly), height x width = size."""
    small = rng.integers(0, 256, (2, 2, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize(size[::-1], Image.Resampling.BILINEAR))


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def no_tensorflow(monkeypatch):
    monkeypatch.setattr(sources, "_tensorflow_available", lambda: False)


def test_folder_values_labels_and_paths(tmp_path, cache):
    written = make_folder(tmp_path / "data")
    train = load_split(str(tmp_path / "data"), "train", cache_dir=str(cache))
    assert isinstance(train, ImageSet)
    assert train.class_names == ["ant", "cat", "dog"]
    assert train.paths == ["ant/00.png", "cat/00.png", "cat/01.png", "cat/02.png",
                           "dog/00.png", "dog/01.png"]  # fmt: skip
    assert train.labels.dtype == np.int64 and train.labels.tolist() == [0, 1, 1, 1, 2, 2]
    assert train.images.dtype == np.uint8 and train.images.shape == (6, 6, 4, 3)
    for image, path in zip(train.images, train.paths):
        assert np.array_equal(image, written[("train", path)]), path
    assert train.superclass_of is None and train.num_classes == 3

    subset = train.take([5, 1])  # e.g. a long-tailed subsample keeps images, labels, paths aligned
    assert subset.paths == ["dog/01.png", "cat/00.png"] and subset.labels.tolist() == [2, 1]
    assert np.array_equal(subset.images[0], written[("train", "dog/01.png")])

    test = load_split(str(tmp_path / "data"), "test", cache_dir=str(cache))
    assert test.class_names == ["ant", "cat", "dog"]
    assert test.labels.tolist() == [1, 2, 2]
    for image, path in zip(test.images, test.paths):
        assert np.array_equal(image, written[("test", path)]), path


def test_pillow_fallback_gives_the_same_pixels_as_tensorflow(tmp_path, monkeypatch):
    """JPEGs, a PNG and a grayscale JPEG: the GPU machine (no TF) must see the same data."""
    make_folder(tmp_path / "data", ext="jpg")
    Image.fromarray(np.full((6, 4, 3), 200, np.uint8)).save(tmp_path / "data/train/cat/x.png")
    gray = np.linspace(0, 255, 24).astype(np.uint8).reshape(6, 4)
    Image.fromarray(gray).save(tmp_path / "data/train/dog/gray.jpg")
    with_tf = load_split(str(tmp_path / "data"), "train", cache_dir=str(tmp_path / "c1"))
    monkeypatch.setattr(sources, "_tensorflow_available", lambda: False)
    with_pillow = load_split(str(tmp_path / "data"), "train", cache_dir=str(tmp_path / "c2"))
    assert with_tf.paths == with_pillow.paths and len(with_tf.paths) == 8
    assert np.array_equal(with_tf.images, with_pillow.images)
    assert (with_tf.images[with_tf.paths.index("cat/x.png")] == 200).all()


def test_tfds_leaves_no_temporary_folders(tmp_path, cache, monkeypatch):
    make_folder(tmp_path / "data")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    load_split(str(tmp_path / "data"), "train", cache_dir=str(cache))
    assert not list((tmp_path / "tmp").glob("tmp*tfds"))  # tfds 4.9 leaks one per builder


def test_test_class_unknown_to_train(tmp_path, cache):
    make_folder(tmp_path / "data", {"train": {"cat": 1}, "test": {"cat": 1, "zebra": 1}})
    with pytest.raises(LTPLLError, match="the 'test' split has class folder.* zebra"):
        load_split(str(tmp_path / "data"), "test", cache_dir=str(cache))


@pytest.mark.parametrize("decoder", ["tensorflow", "pillow"])
def test_sizes_must_agree_unless_resized(tmp_path, cache, monkeypatch, decoder):
    if decoder == "pillow":
        monkeypatch.setattr(sources, "_tensorflow_available", lambda: False)
    make_folder(tmp_path / "data", {"train": {"cat": 2, "dog": 1}})
    odd = np.random.default_rng(1).integers(0, 256, (10, 12, 3)).astype(np.uint8)
    Image.fromarray(odd).save(tmp_path / "data/train/dog/odd.png")
    said = []
    default = load_split(str(tmp_path / "data"), "train", cache_dir=str(cache), log=said.append)
    assert default.images.shape == (4, 224, 224, 3) and default.image_size == 224
    assert any("images differ in size" in line and "224x224" in line for line in said)
    # An odd size the header probe does not see is named when the images are decoded.
    monkeypatch.setattr(files, "_SIZE_PROBES", 1)
    with pytest.raises(LTPLLError, match=r"dog/odd.png is 12x10.*--image-size"):
        load_split(str(tmp_path / "data"), "train", cache_dir=str(cache))

    resized = load_split(str(tmp_path / "data"), "train", image_size=8, cache_dir=str(cache))
    assert resized.images.shape == (4, 8, 8, 3)
    expected = Image.fromarray(odd).resize((8, 8), Image.Resampling.BILINEAR)
    assert np.array_equal(resized.images[resized.paths.index("dog/odd.png")], np.asarray(expected))


@pytest.mark.parametrize("decoder", ["tensorflow", "pillow"])
def test_corrupt_image_is_skipped_or_named_with_strict(tmp_path, cache, monkeypatch, decoder):
    if decoder == "pillow":
        monkeypatch.setattr(sources, "_tensorflow_available", lambda: False)
    make_folder(tmp_path / "data", {"train": {"cat": 2, "dog": 2}})
    (tmp_path / "data/train/dog/zz.jpg").write_bytes(b"not a jpeg at all")
    loaded = load_split(str(tmp_path / "data"), "train", cache_dir=str(cache))
    assert loaded.skipped == ["dog/zz.jpg"] and "dog/zz.jpg" not in loaded.paths
    assert len(loaded) == 4 and loaded.labels.tolist() == [0, 0, 1, 1]
    # From the cache too: --strict still sees the skipped file and refuses.
    for _ in range(2):
        with pytest.raises(LTPLLError, match=r"cannot be decoded.*dog/zz.jpg"):
            load_split(str(tmp_path / "data"), "train", cache_dir=str(cache), strict=True)


def test_path_and_layout_errors(tmp_path, cache):
    with pytest.raises(LTPLLError, match="no dataset"):
        load_split(str(tmp_path / "missing"), "train", cache_dir=str(cache))
    make_folder(tmp_path / "data", {"train": {"cat": 1}})
    with pytest.raises(LTPLLError, match=r"no 'val' split folder.*found folders: train"):
        load_split(str(tmp_path / "data"), "val", cache_dir=str(cache))
    (tmp_path / "empty/train/cat").mkdir(parents=True)
    (tmp_path / "empty/train/cat/notes.txt").write_text("no images here")
    with pytest.raises(LTPLLError, match="no images"):
        load_split(str(tmp_path / "empty"), "train", cache_dir=str(cache))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(LTPLLError, match="neither an image folder nor"):
        load_split(str(tmp_path / "file.txt"), "train", cache_dir=str(cache))
    with pytest.raises(LTPLLError, match="image size"):
        load_split(str(tmp_path / "data"), "train", image_size=0, cache_dir=str(cache))


def test_decoded_arrays_are_cached(tmp_path, cache, monkeypatch):
    make_folder(tmp_path / "data")
    first = load_split(str(tmp_path / "data"), "train", cache_dir=str(cache))
    cached = list((cache / "decoded").glob("*.npz"))
    assert len(cached) == 1

    def no_decoding(*args):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(sources, "_decode_images", no_decoding)
    second = load_split(str(tmp_path / "data"), "train", cache_dir=str(cache))
    assert np.array_equal(first.images, second.images)
    assert np.array_equal(first.labels, second.labels)
    assert (first.class_names, first.paths) == (second.class_names, second.paths)

    # touching an image invalidates the cache (and the stale cache file goes)
    image = tmp_path / "data/train/cat/01.png"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    monkeypatch.undo()
    load_split(str(tmp_path / "data"), "train", cache_dir=str(cache))
    now = list((cache / "decoded").glob("*.npz"))
    assert len(now) == 1 and now != cached


def _tar(folder: Path, archive: Path, top: str | None = None) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for split in sorted(p.name for p in folder.iterdir()):
            tar.add(folder / split, arcname=f"{top}/{split}" if top else split)
    return archive


@pytest.mark.parametrize("top", [None, "cifar-like"])
def test_tar_gz_is_extracted_once_and_read_as_a_folder(tmp_path, cache, monkeypatch, top):
    make_folder(tmp_path / "data")
    archive = _tar(tmp_path / "data", tmp_path / "data.tar.gz", top)
    from_folder = load_split(str(tmp_path / "data"), "train", cache_dir=str(tmp_path / "other"))
    from_tar = load_split(str(archive), "train", cache_dir=str(cache))
    assert from_tar.paths == from_folder.paths
    assert np.array_equal(from_tar.images, from_folder.images)
    extracted = [p.name for p in cache.iterdir() if p.name != "decoded"]
    assert len(extracted) == 1 and extracted[0].startswith("data-")  # no half-extracted leftovers

    monkeypatch.setattr(tarfile, "open", lambda *a, **k: pytest.fail("extracted twice"))
    test = load_split(str(archive), "test", cache_dir=str(cache))
    assert test.labels.tolist() == [1, 2, 2]


def test_broken_or_unsafe_archives(tmp_path, cache):
    broken = tmp_path / "broken.tgz"
    broken.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(LTPLLError, match="cannot extract .*broken.tgz"):
        load_split(str(broken), "train", cache_dir=str(cache))
    evil = tmp_path / "evil.tar.gz"
    (tmp_path / "x.png").write_bytes(b"")
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(tmp_path / "x.png", arcname="../escaped.png")
    with pytest.raises(LTPLLError, match="cannot extract .*evil.tar.gz"):
        load_split(str(evil), "train", cache_dir=str(cache))
    assert not (tmp_path / "escaped.png").exists()
    assert list(cache.iterdir()) == []


def test_tfds_failure_points_to_offline_options(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to establish a new connection")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(LTPLLError, match=r"'cifar10'.*ConnectionError.*image folder.*'sample'"):
        load_split("cifar10", "train")


def test_tfds_cifar100_gets_superclasses_and_paths(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from ltpll.data.candidates import CIFAR100_FINE_NAMES, CIFAR100_SUPERCLASS_OF

    labels = np.array([3, 97, 0, 3])
    data = {
        "image": np.arange(4 * 32 * 32 * 3, dtype=np.uint8).reshape(4, 32, 32, 3),
        "label": labels,
        "coarse_label": CIFAR100_SUPERCLASS_OF[labels],
        "id": np.array([b"a", b"b", b"c", b"d"]),
    }
    label_feature = types.SimpleNamespace(names=list(CIFAR100_FINE_NAMES))
    info = types.SimpleNamespace(features={"label": label_feature})
    calls = []
    monkeypatch.setattr(tfds, "load", lambda *a, **k: calls.append((a, k)) or (data, info))
    monkeypatch.setattr(tfds, "as_numpy", lambda x: x)
    result = load_split("cifar100", "test")
    assert calls[0][1]["split"] == "test" and calls[0][1]["batch_size"] == -1
    assert result.paths == ["test/0", "test/1", "test/2", "test/3"]
    assert result.labels.tolist() == [3, 97, 0, 3]
    assert np.array_equal(result.superclass_of, CIFAR100_SUPERCLASS_OF)
    assert result.class_names[97] == "wolf"


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "ltpll"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "ltpll"


def test_reads_folders_without_tensorflow_installed(tmp_path):
    """The JAX-only GPU machine: importing and loading must not need TensorFlow."""
    make_folder(tmp_path / "data")
    script = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['tensorflow_datasets'] = None\n"
        "from ltpll.data.sources import load_split\n"
        f"s = load_split({str(tmp_path / 'data')!r}, 'train', cache_dir={str(tmp_path / 'c')!r})\n"
        "print(s.images.shape, s.labels.tolist())\n"
    )
    assert run_python(script).strip() == "(6, 6, 4, 3) [0, 1, 1, 1, 2, 2]"


def test_import_does_not_import_tensorflow():
    script = (
        "import sys, ltpll.data.sources, ltpll.data.candidates, ltpll.data.longtail\n"
        "print(sorted(m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules))\n"
    )
    assert run_python(script, "jax").strip() == "[]"


@pytest.mark.skipif(not sources.SAMPLE_ARCHIVE.is_file(), reason="sample not built")
def test_packaged_sample_is_real_cifar10(cache):
    """The shipped sample: 500/100 images per class, pixels as in the shared CIFAR-10 tarball."""
    train = load_split("sample", "train", cache_dir=str(cache))
    test = load_split("sample", "test", cache_dir=str(cache))
    assert train.class_names == CIFAR10_CLASSES == test.class_names
    assert train.images.shape == (5000, 32, 32, 3) and test.images.shape == (1000, 32, 32, 3)
    assert np.bincount(train.labels).tolist() == [500] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert 100 < train.images.mean() < 140  # real photographs, not blank images
    if not SHARED_TARBALL.is_file():
        return
    wanted = {f"train/{train.paths[i]}": train.images[i] for i in (0, 2501, 4999)}
    with tarfile.open(SHARED_TARBALL) as shared:
        for member in shared:
            if member.name in wanted:
                with Image.open(shared.extractfile(member)) as image:
                    original = np.asarray(image.convert("RGB"))
                assert np.array_equal(original, wanted.pop(member.name)), member.name
                if not wanted:
                    break
    assert not wanted
