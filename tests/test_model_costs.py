"""Absolute MACs and parameter counts against numbers derived by hand (docs/methods.md §0: conv and
linear only, C_out * C_in * k_h * k_w * H_out * W_out per image; params include BN and biases)."""
import pytest
import torch

from bench.core import models
from bench.core.measure import count_macs, count_params

K3 = 9  # a 3x3 kernel


def lenet5_by_hand():
    macs = (6 * 1 * 25 * 28 * 28      # conv1, padded to keep 28x28: 117,600
            + 16 * 6 * 25 * 10 * 10   # conv2 on the 14x14 pool output, valid: 240,000
            + 400 * 120 + 120 * 84 + 84 * 10)  # fc 48,000 + 10,080 + 840
    params = (6 * 25 + 6) + (16 * 6 * 25 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    return macs, params


def vgg11_by_hand():
    # (C_in, C_out, output side) of each conv: 64 M 128 M 256 256 M 512 512 M 512 512 M on 32x32
    convs = [(3, 64, 32), (64, 128, 16), (128, 256, 8), (256, 256, 8), (256, 512, 4), (512, 512, 4),
             (512, 512, 2), (512, 512, 2)]
    macs = sum(cin * cout * K3 * s * s for cin, cout, s in convs) + 512 * 512 + 512 * 10
    params = (sum(cin * cout * K3 + 2 * cout for cin, cout, _ in convs)  # no conv bias; BN γ, β
              + 512 * 512 + 512 + 2 * 512 + 512 * 10 + 10)             # fc1, BN1d, fc2
    return macs, params


def resnet20_by_hand():
    # conv1 16x32x32; stage s: 3 blocks of two 3x3 convs at width w, side h; the first block of
    # stages 2 and 3 halves h from a C_in of w/2 and adds a 1x1 projection shortcut (option B)
    macs = 3 * 16 * K3 * 32 * 32
    params = 3 * 16 * K3 + 2 * 16
    for w, h, first in ((16, 32, False), (32, 16, True), (64, 8, True)):
        cin = w // 2 if first else w
        macs += (cin * w + 5 * w * w) * K3 * h * h + (cin * w * h * h if first else 0)
        params += (cin * w + 5 * w * w) * K3 + 6 * 2 * w + ((cin * w + 2 * w) if first else 0)
    macs += 64 * 10
    params += 64 * 10 + 10
    return macs, params


@pytest.mark.parametrize("name, args, shape, by_hand, macs, params", [
    ("lenet5", {}, (1, 28, 28), lenet5_by_hand, 416_520, 61_706),
    ("vgg", {"depth": 11}, (3, 32, 32), vgg11_by_hand, 153_031_680, 9_492_042),
    ("resnet20", {}, (3, 32, 32), resnet20_by_hand, 40_813_184, 272_474),
])
def test_counted_macs_and_params_equal_the_hand_derivation(name, args, shape, by_hand, macs, params):
    assert by_hand() == (macs, params)
    model = models.build(name, shape[0], shape[1], 10, **args)
    assert count_macs(model, torch.zeros(2, *shape)) == macs
    assert count_params(model) == params
