"""The RECORDS authors' CIFAR ResNet-18 weights in ltpll's ``resnet18`` layout (numpy only).

The authors' model (``ResNet_s(name='resnet18')`` of their ``models/resnet.py``) names its
tensors ``encoder.conv1``, ``encoder.bn1``, ``encoder.layer{S}.{B}.conv1|bn1|conv2|bn2``,
``encoder.layer{S}.{B}.shortcut.0|1`` (the 1x1 projection and its BN) and ``fc``; ltpll's
:func:`ltpll.models.backbones.resnet18` names the same layers ``stem_conv``, ``stem_bn``,
``stage{S}_block{B+1}_a|b_conv|bn``, ``stage{S}_block{B+1}_proj_conv|bn``, and the head is the
PLLModel's ``head`` Dense layer. Two layouts differ:

* convolution kernels: PyTorch keeps ``[out, in, kh, kw]`` (OIHW), Keras ``[kh, kw, in, out]``
  (HWIO);
* the linear head: PyTorch ``y = x W^T + b`` with ``W`` ``[out, in]``, Keras ``y = x K + b`` with
  ``K`` ``[in, out]``: ``K = W^T``.

BatchNorm's four tensors map one to one (weight -> gamma, bias -> beta, running_mean ->
moving_mean, running_var -> moving_variance); PyTorch's ``num_batches_tracked`` has no Keras
counterpart and is dropped. Neither torch nor Keras is imported here, so the mapping is unit
tested without either (``tests/test_official_weights.py``).
"""

import re

import numpy as np

# torch sub-module -> ltpll layer, inside one basic block.
_BLOCK_PARTS = {"conv1": "a_conv", "bn1": "a_bn", "conv2": "b_conv", "bn2": "b_bn",
                "shortcut.0": "proj_conv", "shortcut.1": "proj_bn"}
_BN_TENSORS = ("weight", "bias", "running_mean", "running_var")  # Keras' weight order
_BLOCK = re.compile(r"^encoder\.layer(\d+)\.(\d+)\.(.+)$")


def conv_kernel_to_keras(kernel):
    """A PyTorch OIHW convolution kernel as a Keras HWIO one."""
    kernel = np.asarray(kernel)
    if kernel.ndim != 4:
        raise ValueError(f"a convolution kernel has 4 axes; received shape {kernel.shape}")
    return np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))


def dense_kernel_to_keras(weight):
    """A PyTorch ``nn.Linear`` weight ``[out, in]`` as a Keras Dense kernel ``[in, out]``."""
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise ValueError(f"a linear weight has 2 axes; received shape {weight.shape}")
    return np.ascontiguousarray(weight.T)


def keras_layer_name(module):
    """ltpll's layer name for one of the authors' sub-modules (``encoder.layer2.0.conv1`` ->
    ``stage2_block1_a_conv``; ``fc`` -> ``head``)."""
    if module == "fc":
        return "head"
    if module == "encoder.conv1":
        return "stem_conv"
    if module == "encoder.bn1":
        return "stem_bn"
    match = _BLOCK.match(module)
    if match is None or match.group(3) not in _BLOCK_PARTS:
        raise ValueError(f"no ltpll layer for the official module {module!r}")
    stage, block, part = match.groups()
    return f"stage{int(stage)}_block{int(block) + 1}_{_BLOCK_PARTS[part]}"


def torch_to_keras(state):
    """``{ltpll layer name: [arrays in Keras' get_weights order]}`` from the authors'
    ``state_dict`` (as numpy arrays, keyed by the state-dict names).

    Raises:
        ValueError: for a tensor that has no place, or a BatchNorm missing one of its four.
    """
    modules = {}
    for key, value in state.items():
        module, _, tensor = key.rpartition(".")
        if tensor == "num_batches_tracked":
            continue
        modules.setdefault(module, {})[tensor] = np.asarray(value)
    layers = {}
    for module, tensors in modules.items():
        name = keras_layer_name(module)
        if set(tensors) == {"weight"} and tensors["weight"].ndim == 4:
            layers[name] = [conv_kernel_to_keras(tensors["weight"])]
        elif name == "head":
            layers[name] = [dense_kernel_to_keras(tensors["weight"]), tensors["bias"]]
        elif set(tensors) == set(_BN_TENSORS):
            layers[name] = [tensors[t] for t in _BN_TENSORS]
        else:
            raise ValueError(f"official module {module!r} has tensors {sorted(tensors)}; "
                             "expected a bias-free conv, a BatchNorm or the fc head")
    return layers
