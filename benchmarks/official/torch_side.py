"""The authors' side of ``crosscheck.py``: their ResNet-18 and CORR_loss_RECORDS, SGD steps.

Run with a Python that has torch (``make crosscheck-official`` uses ``$(TORCH_VENV)``), never
with the project's: TensorFlow and torch stay in separate processes. ``crosscheck.py`` writes the
inputs (uint8 images, candidate sets, the batch order, the hyper-parameters) to an ``.npz`` and
reads back what this script records, also an ``.npz``:

* ``init.<state-dict name>``: the freshly initialised weights (``torch.manual_seed(seed)``, the
  authors' own initialisation), which the Keras side copies;
* for each variant ``V`` (``asis``: the authors' network untouched; ``tfpad``: its 3x3 stride-2
  convolutions padded as TensorFlow's ``"same"`` pads, one row and column at the bottom and right
  only, to separate that known layout difference from everything else) and step ``k``:
  ``V.loss`` (the CORR loss, without weight decay), ``V.grad_kernel`` / ``V.grad_bias`` (the
  head's gradient of the whole objective, loss plus ``wd/2 ||w||^2``: PyTorch's SGD adds
  ``wd * w`` to ``.grad`` inside ``step()``, Keras' coupled L2 puts it in the gradient),
  ``V.rows`` (the batch's confidence rows the step wrote), ``V.feature_mean`` (RECORDS' ``F``
  after the step), and ``V.final.<name>`` (weights and BatchNorm statistics after the last step).

The step follows the authors' ``train.py`` for CIFAR-10 with ``--records``: ``ResNet_s(name=
'resnet18', num_class=C)``, the confidence table initialised uniform over each candidate set,
``CORR_loss_RECORDS(confidence, m)``, both views in one forward pass (``torch.cat``) so BatchNorm
sees them together, ``loss_fn(out_w, out_s, feat_w, feat_s, model, index, update_target)``,
then ``zero_grad``, ``backward``, ``step``. Augmentation is off: both views are the same
normalised images, on both sides.
"""

import argparse
import copy
import os
import sys
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from benchmarks.official.checkout import load_official  # noqa: E402

# (name, TensorFlow-style padding, dtype). tfpad64 is tfpad in float64: how far float32 rounding
# alone moves the official numbers, the noise floor to read the other columns against.
VARIANTS = (("asis", False, "float32"), ("tfpad", True, "float32"), ("tfpad64", True, "float64"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, help="the RECORDS-LTPLL checkout")
    parser.add_argument("--inputs", required=True, help=".npz written by crosscheck.py")
    parser.add_argument("--output", required=True, help=".npz to write")
    return parser.parse_args(argv)


def tf_same_padding(model, torch):
    """Makes every 3x3 stride-2 convolution pad as TensorFlow's ``"same"``: (0, 1) rows and
    columns instead of PyTorch's (1, 1). Returns a function that undoes it."""
    functional = torch.nn.functional
    undo = []
    for module in model.modules():
        if (isinstance(module, torch.nn.Conv2d) and module.stride == (2, 2)
                and module.kernel_size == (3, 3)):
            previous = module.padding
            module.padding = (0, 0)
            handle = module.register_forward_pre_hook(
                lambda _, inputs: (functional.pad(inputs[0], (0, 1, 0, 1)),))
            undo.append((module, previous, handle))

    def restore():
        for module, previous, handle in undo:
            handle.remove()
            module.padding = previous
    return restore


def run_variant(model, init_state, losses, torch, inputs, tf_padding, dtype):
    """The SGD steps of one variant from ``init_state`` in ``dtype``; the recorded arrays."""
    model.to(getattr(torch, dtype))
    model.load_state_dict(init_state)
    restore = tf_same_padding(model, torch) if tf_padding else (lambda: None)
    hyper = {key: float(inputs[key]) for key in ("lr", "momentum", "weight_decay", "records_m")}
    mean = inputs["mean"].astype(np.float32)
    std = inputs["std"].astype(np.float32)
    images = (inputs["images"].astype(np.float32) / np.float32(255.0) - mean) / std
    images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(dtype))
    candidates = torch.from_numpy(inputs["candidates"].astype(dtype))
    # train.py: confidence = givenY / givenY.sum(1), the uniform start over each set.
    confidence = candidates / candidates.sum(dim=1, keepdim=True)
    loss_fn = losses.CORR_loss_RECORDS(confidence, m=hyper["records_m"])
    optimizer = torch.optim.SGD(model.parameters(), hyper["lr"], momentum=hyper["momentum"],
                                weight_decay=hyper["weight_decay"])
    holder = types.SimpleNamespace(module=model)  # their loss reads model.module.fc
    record = {"loss": [], "grad_kernel": [], "grad_bias": [], "rows": [], "feature_mean": []}
    model.train()
    for batch in inputs["order"]:
        index = torch.from_numpy(batch.astype(np.int64))
        x = images[index]
        logits, features = model(torch.cat((x, x), 0))
        out_w, out_s = torch.split(logits, len(batch), dim=0)
        feat_w, feat_s = torch.split(features, len(batch), dim=0)
        loss = loss_fn(out_w, out_s, feat_w, feat_s, holder, index, bool(inputs["update"]))
        optimizer.zero_grad()
        loss.backward()
        fc = model.fc
        record["loss"].append(loss.item())
        record["grad_kernel"].append(
            (fc.weight.grad + hyper["weight_decay"] * fc.weight).detach().numpy().copy())
        record["grad_bias"].append(
            (fc.bias.grad + hyper["weight_decay"] * fc.bias).detach().numpy().copy())
        record["rows"].append(loss_fn.confidence[index].detach().numpy().copy())
        record["feature_mean"].append(loss_fn.feat_mean.detach().numpy().copy())
        optimizer.step()
    restore()
    model.float()
    arrays = {key: np.asarray(values) for key, values in record.items()}
    for name, value in model.state_dict().items():
        arrays[f"final.{name}"] = value.detach().numpy().copy()
    return arrays


def main(argv=None):
    args = parse_args(argv)
    import torch

    torch.use_deterministic_algorithms(True)
    resnet, losses = load_official(args.official)
    with np.load(args.inputs) as data:
        inputs = {key: data[key] for key in data.files}
    torch.manual_seed(int(inputs["seed"]))
    model = resnet.ResNet_s(name="resnet18", num_class=int(inputs["candidates"].shape[1]))
    init_state = copy.deepcopy(model.state_dict())
    out = {f"init.{name}": value.numpy().copy() for name, value in init_state.items()}
    for variant, tf_padding, dtype in VARIANTS:
        arrays = run_variant(model, init_state, losses, torch, inputs, tf_padding, dtype)
        out.update({f"{variant}.{key}": value for key, value in arrays.items()})
    np.savez(args.output, **out)


if __name__ == "__main__":
    main()
