"""Training-step speed of ltpll next to the RECORDS authors' PyTorch code, on the same images.

Usage (``make bench-vs-official-cpu OFFICIAL=path/to/RECORDS-LTPLL`` does this)::

    KERAS_BACKEND=tensorflow .venv/bin/python benchmarks/official/bench_vs_official.py \\
        --official path/to/RECORDS-LTPLL --torch-python path/to/torch-venv/bin/python

Both sides train CORR + RECORDS on the same ``--images`` CIFAR-10 JPEGs (the first
``images / 10`` of each class of the shared tarball, unpacked once into ``--cache``), same
backbone and batch size, two augmented views per image:

* ``ltpll``: a real ``ltpll train`` run with the user's defaults (:mod:`ltpll_step`);
* ``official``: the authors' ``train()`` loop with their model, loss and PIL augmentation
  ``DataLoader`` (:mod:`torch_step`), in the torch venv.

A step is the wall clock between two consecutive batch ends, after ``--warmup`` batches, gaps
across an epoch end left out (:mod:`steps`). The two run back to back in ``--rounds`` pairs, each
in a fresh process, so a slow spell of a shared machine hits both of a pair; the table gives the
median ms per step, images/s (one image = two views through the network) at each round's median
step, and the range of the paired ratio ltpll images/s / official images/s (above 1: ltpll is
faster).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
sys.path.insert(0, _HERE)

from checkout import CheckoutError, check_checkout  # noqa: E402
from steps import summary  # noqa: E402

DEFAULT_TARBALL = os.path.join(_ROOT, "..", "shared", "data", "cifar10-jpg.tar.gz")
TEST_PER_CLASS = 10   # ltpll train evaluates a test split at each epoch end (outside the steps)


def default_cache():
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                        "ltpll")


def prepare_images(tarball, cache, images, test_per_class=TEST_PER_CLASS):
    """The image folder both sides train on: ``train/<class>/`` with the first (sorted)
    ``images / classes`` files of each class of the tarball's train split, and a small
    ``test/`` split. Made once; a complete folder carries a ``.complete`` marker."""
    root = os.path.join(cache, "bench-vs-official", f"cifar10-{images}")
    if os.path.exists(os.path.join(root, ".complete")):
        return root
    if not os.path.isfile(tarball):
        raise SystemExit(f"no CIFAR-10 tarball at {tarball} (give --dataset)")
    with tarfile.open(tarball) as archive:   # one pass for the names...
        by_class = {}
        for member in archive.getmembers():
            if member.isfile() and member.name.endswith(".jpg"):
                split, name, _ = member.name.split("/")[-3:]
                by_class.setdefault((split, name), []).append(member.name)
    classes = sorted({name for split, name in by_class if split == "train"})
    if not classes or images <= 0 or images % len(classes):
        raise SystemExit(f"--images must be a multiple of the {len(classes) or 10} classes")
    chosen = {}
    for split, count in (("train", images // len(classes)), ("test", test_per_class)):
        for name in classes:
            names = sorted(by_class.get((split, name), []))[:count]
            if len(names) < count:
                raise SystemExit(f"the tarball has {len(names)} {split} images of {name}, "
                                 f"fewer than {count}")
            chosen.update({path: os.path.join(split, name) for path in names})
    scratch = tempfile.mkdtemp(prefix=".partial-", dir=_makedirs(os.path.dirname(root)))
    with tarfile.open(tarball, "r|gz") as archive:   # ...and one streamed pass for the bytes
        for member in archive:                       # (seeking back in a .gz re-reads it)
            if member.name in chosen:
                folder = _makedirs(os.path.join(scratch, chosen[member.name]))
                with open(os.path.join(folder, os.path.basename(member.name)), "wb") as out:
                    out.write(archive.extractfile(member).read())
    open(os.path.join(scratch, ".complete"), "w").close()
    if os.path.exists(root):   # an earlier attempt that stopped before its marker
        shutil.rmtree(root)
    os.rename(scratch, root)
    return root


def _makedirs(path):
    os.makedirs(path, exist_ok=True)
    return path


def _child(command, label, env=None):
    """Runs one side; its JSON result, or exit with the tail of its output."""
    with tempfile.TemporaryDirectory(prefix="bench-vs-official-") as scratch:
        out = os.path.join(scratch, "result.json")
        done = subprocess.run([*command, "--json-out", out], capture_output=True, text=True,
                              env=env, cwd=_ROOT)
        if done.returncode or not os.path.exists(out):
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise SystemExit(f"the {label} run failed (exit {done.returncode}):\n{tail}")
        with open(out) as file:
            return json.load(file)


def run_pair(args, data):
    """One round: ltpll then the authors' code, each in a fresh process."""
    common = ["--data", data, "--backbone", args.backbone, "--batch-size", str(args.batch_size),
              "--warmup", str(args.warmup), "--steps", str(args.steps)]
    env = dict(os.environ)
    env.setdefault("KERAS_BACKEND", "tensorflow")
    ltpll = _child([sys.executable, os.path.join(_HERE, "ltpll_step.py"), *common], "ltpll",
                   env)
    official = _child([args.torch_python, os.path.join(_HERE, "torch_step.py"), *common,
                       "--official", args.official, "--workers", str(args.workers)], "official")
    return {"ltpll": ltpll, "official": official}


def table(rounds, batch_size):
    """Markdown rows: implementation | ms per step (median) | images/s (min/median/max) |
    paired ratio range (ltpll images/s over official images/s of the same round)."""
    lines = ["| implementation | ms per step (median) | images/s (min / median / max) | "
             "paired ratio (ltpll / official images/s) |", "|---|---|---|---|"]
    speeds = {name: [summary(r[name]["ms_per_step"], batch_size) for r in rounds]
              for name in ("ltpll", "official")}
    ratios = [a["images_per_s"] / b["images_per_s"]
              for a, b in zip(speeds["ltpll"], speeds["official"])]
    for name in ("ltpll", "official"):
        ms = statistics.median(s["median_ms"] for s in speeds[name])
        ips = [s["images_per_s"] for s in speeds[name]]
        ratio = (f"{min(ratios):.2f} - {max(ratios):.2f}" if name == "ltpll"
                 else "1 (reference)")
        lines.append(f"| {name} | {ms:.0f} | {min(ips):.1f} / {statistics.median(ips):.1f} / "
                     f"{max(ips):.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", default=os.environ.get("OFFICIAL"),
                        help="the authors' RECORDS-LTPLL checkout")
    parser.add_argument("--torch-python", default=os.environ.get("TORCH_PYTHON"),
                        help="python of a venv with torch and torchvision (no ltpll needed)")
    parser.add_argument("--dataset", default=DEFAULT_TARBALL, help="the CIFAR-10 JPEG tarball")
    parser.add_argument("--cache", default=default_cache(),
                        help="where the image subset is unpacked once")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet-small"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2,
                        help="DataLoader workers of the authors' loop")
    parser.add_argument("--json-out", default=None, help="also write every round's numbers here")
    args = parser.parse_args(argv)
    try:
        args.official = check_checkout(args.official)
    except CheckoutError as error:
        parser.exit(2, f"error: {error}\n")
    if not args.torch_python or not os.access(args.torch_python, os.X_OK):
        parser.exit(2, "error: give a python with torch: --torch-python path/to/bin/python\n")
    if args.rounds < 1 or args.steps < 1 or args.warmup < 0:
        parser.exit(2, "error: --rounds and --steps must be at least 1, --warmup at least 0\n")

    data = prepare_images(args.dataset, args.cache, args.images)
    rounds = []
    for number in range(1, args.rounds + 1):
        rounds.append(run_pair(args, data))
        speeds = {name: summary(rounds[-1][name]["ms_per_step"], args.batch_size)
                  for name in rounds[-1]}
        print(f"round {number}/{args.rounds}: " + ", ".join(
            f"{name} {s['median_ms']:.0f} ms/step" for name, s in speeds.items()), flush=True)
    print()
    print(f"CORR + RECORDS, {args.backbone}, batch {args.batch_size}, {args.images} CIFAR-10 "
          f"images, {args.rounds} rounds x {args.steps} steps after {args.warmup} warm-up; "
          f"one image = two augmented views")
    print(table(rounds, args.batch_size))
    ours = rounds[0]["ltpll"]
    print(f"ltpll: {ours['command']} (backend {ours['backend']}, default precision "
          f"{ours['precision']}, {'XLA' if ours['jit_compile'] else 'no XLA'})")
    official = rounds[0]["official"]
    waits = [statistics.median(r["official"]["wait_ms"]) for r in rounds]
    print(f"official: torch {official['torch']}, {official['threads']} threads, "
          f"{official['workers']} DataLoader workers; of each step, "
          f"{statistics.median(waits):.0f} ms (median) waiting for the DataLoader")
    if args.json_out:
        with open(args.json_out, "w") as file:
            json.dump({"settings": {k: v for k, v in vars(args).items()}, "rounds": rounds},
                      file, indent=1)


if __name__ == "__main__":
    main()
