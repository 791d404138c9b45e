"""Build ltpll's packaged demo sample from the offline CIFAR-10 image-folder tarball.

    python benchmarks/make_sample.py [--source ../shared/data/cifar10-jpg.tar.gz]

Writes ``ltpll/sample/cifar10_sample.tar.gz``: an image folder with 500 training and 100 test
images per class (a seeded choice), keeping the ``<split>/<class>/NNNN.jpg`` layout and the
original JPEG bytes (no re-encoding, so the sample's pixels are exactly CIFAR-10-JPEG's). The
archive is reproducible: members in sorted order, normalised owners, gzip timestamp 0, so
re-running it with the same arguments gives the same bytes.

``ltpll`` reads it as the dataset ``sample`` (``load_split("sample", "train")``).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SOURCE = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz")
DEFAULT_OUTPUT = os.path.join(HERE, os.pardir, "ltpll", "sample", "cifar10_sample.tar.gz")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="CIFAR-10 image-folder .tar.gz")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    per_class = {"train": args.train_per_class, "test": args.test_per_class}
    with tarfile.open(args.source, "r:gz") as source:
        members = image_members(source)
        chosen = choose(members, per_class, args.seed)
        write_archive(source, chosen, os.path.normpath(args.output))
    report(chosen, os.path.normpath(args.output))
    return 0


def image_members(source: tarfile.TarFile) -> dict[tuple[str, str], list[tarfile.TarInfo]]:
    """``{(split, class): [members sorted by name]}`` for every ``<split>/<class>/<file>.jpg``."""
    groups = collections.defaultdict(list)
    for member in source.getmembers():
        parts = member.name.split("/")
        if member.isfile() and len(parts) == 3 and parts[2].lower().endswith(".jpg"):
            groups[(parts[0], parts[1])].append(member)
    return {key: sorted(group, key=lambda m: m.name) for key, group in sorted(groups.items())}


def choose(members, per_class: dict[str, int], seed: int) -> list[tarfile.TarInfo]:
    """A seeded choice of ``per_class[split]`` images of each class, in sorted order."""
    chosen = []
    for (split, class_name), group in members.items():
        if split not in per_class:
            continue
        wanted = per_class[split]
        if len(group) < wanted:
            sys.exit(f"{split}/{class_name} has {len(group)} images, fewer than {wanted}")
        class_index = sorted({c for s, c in members if s == split}).index(class_name)
        rng = np.random.default_rng([seed, list(per_class).index(split), class_index])
        picks = np.sort(rng.choice(len(group), size=wanted, replace=False))
        chosen.extend(group[i] for i in picks)
    return chosen


def read_bytes(source: tarfile.TarFile, chosen: list[tarfile.TarInfo]) -> dict[str, bytes]:
    """The chosen members' bytes, read in archive order (a .tar.gz cannot cheaply seek back)."""
    wanted = {member.name for member in chosen}
    return {m.name: source.extractfile(m).read() for m in source.getmembers() if m.name in wanted}


def write_archive(source: tarfile.TarFile, chosen: list[tarfile.TarInfo], output: str) -> None:
    """Copy the chosen members' bytes into a reproducible .tar.gz, atomically."""
    data = read_bytes(source, chosen)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    tmp = output + ".tmp"
    with open(tmp, "wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9
    ) as zipped, tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as out:
        for member in chosen:
            info = tarfile.TarInfo(member.name)
            info.size, info.mtime, info.mode = len(data[member.name]), member.mtime, 0o644
            out.addfile(info, io.BytesIO(data[member.name]))
    os.replace(tmp, output)


def report(chosen: list[tarfile.TarInfo], output: str) -> None:
    counts = collections.Counter(m.name.split("/")[0] for m in chosen)
    with open(output, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    size = os.path.getsize(output)
    print(f"wrote {output}: {dict(counts)} images, {size / 1e6:.2f} MB, sha256 {digest}")


if __name__ == "__main__":
    sys.exit(main())
