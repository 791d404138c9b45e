"""The RECORDS authors' CORR + RECORDS training loop, timed per step (torch venv's python).

What runs is the authors' code from the user's checkout, put together the way their
``train.py`` does for ``--records`` (no mixup):

* data: their ``utils/cifar10.py`` dataset class ``CIFAR10_Augmentention`` (a weak view:
  random-resized crop, flip, colour jitter, grey; a strong view: crop, flip and their PIL
  ``RandomAugment(3, 5)`` from ``utils/randaugment.py``), in a ``DataLoader`` with ``--workers``
  processes, shuffled, ``drop_last``; the images are the same JPEG folder ltpll trains on, the
  candidate sets drawn by their ``generate_uniform_cv_candidate_labels`` (q = ``--partial-rate``);
* model: their ``ResNet_s`` (``models/resnet.py``: CIFAR ResNet-18 and a linear head);
* loss: their ``CORR_loss_RECORDS(confidence, m=0.9)`` with the table update on, as from epoch
  ``upd_start`` = 1 on;
* step: both views in one forward pass, the loss, their ``accuracy`` on the weak view and
  ``loss.item()`` for the progress meters, ``zero_grad`` / ``backward`` / SGD (lr 0.01, momentum
  0.9, weight decay 1e-3).

One thing differs from their script, for running as one process: the model sits in a thin
wrapper that has the ``.module`` attribute their loss reads (``model.module.fc``) instead of
``DistributedDataParallel``, which needs a process group (with one process it only adds gradient
all-reduce hooks). ``--device cuda`` moves what their ``train()`` moves with ``.cuda()`` (the
model, the confidence table, both views, the indices and the true labels);
the default, ``cpu``, moves nothing. Their loop calls ``loss.item()`` every step, which waits
for the GPU, so the step times need no extra synchronisation.

``--backbone resnet-small`` builds ltpll's small CIFAR ResNet (16/32/64 channels, one block per
stage, 64-d features) from the authors' own ``BasicBlock`` and puts it under their ``ResNet_s``
head; their code has no such model, so this is the same network in their building blocks.

Writes one JSON object to ``--json-out``: per-step milliseconds (:mod:`steps`), the part of
each spent waiting for the ``DataLoader`` (``wait_ms``), the settings, the torch version and
thread count.
"""

import argparse
import contextlib
import importlib
import json
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)

from checkout import load_official  # noqa: E402
from steps import batches_needed, step_intervals, timed_batches  # noqa: E402


def load_folder(split_dir):
    """uint8 images ``[N, H, W, 3]`` and int labels of ``<split_dir>/<class>/<image>``, classes
    sorted (label order), files sorted (the order ltpll lists them)."""
    classes = sorted(name for name in os.listdir(split_dir)
                     if os.path.isdir(os.path.join(split_dir, name)))
    if not classes:
        raise SystemExit(f"torch_step: no class folders under {split_dir}")
    images, labels = [], []
    for label, name in enumerate(classes):
        folder = os.path.join(split_dir, name)
        for file in sorted(os.listdir(folder)):
            with Image.open(os.path.join(folder, file)) as image:
                images.append(np.asarray(image.convert("RGB")))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


class _Replica(torch.nn.Module):
    """Stands in for DistributedDataParallel: the authors' loss reads ``model.module.fc``."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def _register_resnet_small(resnet):
    """Adds ``resnet-small`` to the checkout's ``model_dict``, built from its ``BasicBlock``."""
    nn = torch.nn

    class SmallResNet(nn.Module):
        def __init__(self, widths=(16, 32, 64)):
            super().__init__()
            self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(widths[0])
            stages, channels = [], widths[0]
            for stage, width in enumerate(widths):
                stages.append(resnet.BasicBlock(channels, width, stride=1 if stage == 0 else 2))
                channels = width
            self.stages = nn.Sequential(*stages)
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, x):
            out = self.stages(F.relu(self.bn1(self.conv1(x))))
            return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)

    resnet.model_dict["resnet-small"] = [SmallResNet, 64]


def run(args):
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    resnet, losses = load_official(args.official)
    cifar10 = importlib.import_module("utils.cifar10")
    algo = importlib.import_module("utils.utils_algo")
    if args.backbone == "resnet-small":
        _register_resnet_small(resnet)

    images, labels = load_folder(os.path.join(args.data, "train"))
    num_classes = int(labels.max()) + 1
    with contextlib.redirect_stdout(sys.stderr):  # their generator prints the transition matrix
        given = algo.generate_uniform_cv_candidate_labels(torch.from_numpy(labels).long(),
                                                          args.partial_rate)
    dataset = cifar10.CIFAR10_Augmentention(images, given.float(),
                                            torch.from_numpy(labels).float(), con=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                         num_workers=args.workers, drop_last=True)
    steps_per_epoch = len(loader)
    total = batches_needed(args.warmup, args.steps, steps_per_epoch)

    device = torch.device(args.device)
    model = _Replica(resnet.ResNet_s(name=args.backbone, num_class=num_classes,
                                     pretrained=False)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), args.lr, momentum=0.9,
                                weight_decay=args.weight_decay)
    confidence = (given.float() / given.sum(dim=1, keepdim=True)).to(device)
    loss_fn = losses.CORR_loss_RECORDS(confidence, m=0.9)

    model.train()
    stamps, arrivals, batch, epoch = [], [], 0, 0
    started = time.perf_counter()
    while batch < total:
        for images_w, images_s, _, true_labels, index in loader:
            arrivals.append(time.perf_counter())
            images_w, images_s, index, true_labels = (
                t.to(device) for t in (images_w, images_s, index, true_labels))
            cls_out, feat = model(torch.cat((images_w, images_s), 0))
            size = images_w.shape[0]
            out_w, out_s = torch.split(cls_out, size, dim=0)
            feat_w, feat_s = torch.split(feat, size, dim=0)
            loss = loss_fn(out_w, out_s, feat_w, feat_s, model, index, True)
            loss.item()
            algo.accuracy(out_w, true_labels.long())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            stamps.append((epoch, time.perf_counter()))
            batch += 1
            if batch == total:
                break
        epoch += 1
    ms = step_intervals(stamps, args.warmup, args.steps)
    # the part of each timed step spent waiting for the DataLoader's next batch
    wait = [1000.0 * (arrivals[k] - stamps[k - 1][1])
            for k in timed_batches(stamps, args.warmup, args.steps)]
    return {
        "implementation": "official", "backbone": args.backbone, "batch_size": args.batch_size,
        "images": len(labels), "warmup": args.warmup, "steps": args.steps,
        "workers": args.workers, "ms_per_step": ms, "wait_ms": wait,
        "run_s": time.perf_counter() - started,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, help="the authors' RECORDS-LTPLL checkout")
    parser.add_argument("--data", required=True, help="image folder with a train/ split")
    parser.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet-small"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partial-rate", type=float, default=0.3)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU")
    parser.add_argument("--json-out", required=True)
    args = parser.parse_args(argv)
    result = run(args)
    with open(args.json_out, "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main()
