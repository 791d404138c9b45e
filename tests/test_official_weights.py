"""The torch -> Keras weight mapping of benchmarks/official/weights.py, without torch or Keras.

The layouts are checked by what they compute: a convolution written out in numpy in PyTorch's
NCHW/OIHW convention must equal the same convolution in Keras' NHWC/HWIO convention with the
converted kernel, and likewise the linear head; the names by covering the authors' ResNet-18.
"""

import numpy as np
import pytest

from benchmarks.official.weights import (
    conv_kernel_to_keras,
    dense_kernel_to_keras,
    keras_layer_name,
    torch_to_keras,
)


def conv_nchw_oihw(x, w):
    """Cross-correlation as torch.nn.functional.conv2d (stride 1, no padding)."""
    out_c, _, kh, kw = w.shape
    n, _, h, width = x.shape
    out = np.zeros((n, out_c, h - kh + 1, width - kw + 1))
    for i in range(h - kh + 1):
        for j in range(width - kw + 1):
            out[:, :, i, j] = np.einsum("ncab,ocab->no", x[:, :, i:i + kh, j:j + kw], w)
    return out


def conv_nhwc_hwio(x, k):
    """Cross-correlation as keras.layers.Conv2D (padding "valid")."""
    kh, kw, _, out_c = k.shape
    n, h, width, _ = x.shape
    out = np.zeros((n, h - kh + 1, width - kw + 1, out_c))
    for i in range(h - kh + 1):
        for j in range(width - kw + 1):
            out[:, i, j, :] = np.einsum("nabc,abco->no", x[:, i:i + kh, j:j + kw, :], k)
    return out


def test_conv_kernel_computes_the_same_convolution():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 6, 5))                       # NCHW, non-square on purpose
    w = rng.normal(size=(4, 3, 3, 2))                       # OIHW, kh != kw on purpose
    torch_out = conv_nchw_oihw(x, w)
    keras_out = conv_nhwc_hwio(x.transpose(0, 2, 3, 1), conv_kernel_to_keras(w))
    np.testing.assert_allclose(keras_out.transpose(0, 3, 1, 2), torch_out, rtol=1e-12)
    # The test can fail: a square kernel laid out with H and W swapped computes another conv.
    square = rng.normal(size=(4, 3, 3, 3))
    swapped = conv_nhwc_hwio(x.transpose(0, 2, 3, 1), square.transpose(3, 2, 1, 0))
    assert not np.allclose(swapped.transpose(0, 3, 1, 2), conv_nchw_oihw(x, square))


def test_dense_kernel_computes_the_same_head():
    rng = np.random.default_rng(1)
    weight, bias = rng.normal(size=(10, 7)), rng.normal(size=10)   # nn.Linear(7, 10)
    features = rng.normal(size=(3, 7))
    np.testing.assert_allclose(features @ dense_kernel_to_keras(weight) + bias,
                               features @ weight.T + bias, rtol=1e-12)


def official_resnet18_state(num_classes=10, rng=None):
    """The state-dict names and shapes of the authors' ResNet_s(name='resnet18')."""
    rng = rng or np.random.default_rng(2)
    state = {}

    def bn(prefix, c):
        for name in ("weight", "bias", "running_mean", "running_var"):
            state[f"{prefix}.{name}"] = rng.normal(size=c)
        state[f"{prefix}.num_batches_tracked"] = np.array(0)

    state["encoder.conv1.weight"] = rng.normal(size=(64, 3, 3, 3))
    bn("encoder.bn1", 64)
    in_c = 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"encoder.layer{stage}.{block}"
            state[f"{p}.conv1.weight"] = rng.normal(size=(width, in_c, 3, 3))
            bn(f"{p}.bn1", width)
            state[f"{p}.conv2.weight"] = rng.normal(size=(width, width, 3, 3))
            bn(f"{p}.bn2", width)
            if block == 0 and stage > 1:
                state[f"{p}.shortcut.0.weight"] = rng.normal(size=(width, in_c, 1, 1))
                bn(f"{p}.shortcut.1", width)
            in_c = width
    state["fc.weight"] = rng.normal(size=(num_classes, 512))
    state["fc.bias"] = rng.normal(size=num_classes)
    return state


def test_every_official_tensor_lands_in_ltpll_resnet18_layer_names():
    state = official_resnet18_state()
    layers = torch_to_keras(state)
    # 20 convolutions (stem, 16 in blocks, 3 projections), 20 BatchNorms, the head.
    assert len(layers) == 41
    assert layers["stem_conv"][0].shape == (3, 3, 3, 64)
    assert layers["stage2_block1_proj_conv"][0].shape == (1, 1, 64, 128)
    assert "stage1_block1_proj_conv" not in layers       # identity shortcut in stage 1
    np.testing.assert_array_equal(layers["head"][0], state["fc.weight"].T)
    gamma, beta, mean, var = layers["stage4_block2_b_bn"]
    np.testing.assert_array_equal(gamma, state["encoder.layer4.1.bn2.weight"])
    np.testing.assert_array_equal(beta, state["encoder.layer4.1.bn2.bias"])
    np.testing.assert_array_equal(mean, state["encoder.layer4.1.bn2.running_mean"])
    np.testing.assert_array_equal(var, state["encoder.layer4.1.bn2.running_var"])
    np.testing.assert_array_equal(layers["stage3_block1_a_conv"][0],
                                  state["encoder.layer3.0.conv1.weight"].transpose(2, 3, 1, 0))


def test_names_follow_ltpll_block_numbering():
    assert keras_layer_name("encoder.layer1.0.conv1") == "stage1_block1_a_conv"
    assert keras_layer_name("encoder.layer4.1.bn2") == "stage4_block2_b_bn"
    assert keras_layer_name("encoder.layer3.0.shortcut.1") == "stage3_block1_proj_bn"


def test_unknown_tensors_are_refused_with_one_line():
    with pytest.raises(ValueError, match="no ltpll layer"):
        keras_layer_name("encoder.layer1.0.conv3")
    with pytest.raises(ValueError, match="expected a bias-free conv"):
        torch_to_keras({"encoder.bn1.weight": np.ones(3)})   # a BatchNorm missing three tensors
