"""The networks of ``benchmarks/networks.py``, built from plain ``torch.nn`` layers.

torchvision and timm do not load beside the CPU build of torch here, so the models are
written out: each is a few lines, shaped like the network it is named after. Every builder
takes ``conv`` (the Conv2d class to use; ``torch.nn.Conv2d`` by default) so that a model
can also be built directly from ``convforge.nn.Conv2d``; ``benchmarks/networks.py``
builds them with torch's and converts a copy with ``convforge.nn.convert``.

* ``lenet``: LeNet-5 on 3x32x32 (3->6->16, 5x5, average pooling, three dense layers).
* ``resnet_cifar``: ResNet-20 for CIFAR (He et al. 2016, section 4.2): a 3x3 stem, three
  stages of three basic blocks with 16, 32 and 64 channels, 1x1 projection shortcuts.
* ``mobilenet_v2_cifar``: MobileNetV2's inverted residual blocks (Sandler et al. 2018):
  1x1 expand (factor 6), 3x3 depthwise, 1x1 project, BatchNorm and ReLU6; stride 1 stem
  and the first downsampling steps removed for 32x32 inputs.
* ``convnext_cifar``: ConvNeXt blocks (Liu et al. 2022): 7x7 depthwise, GroupNorm(1, C),
  1x1 MLP with factor 4 and GELU, residual; a 2x2 stride-2 patchify stem.
* ``resnet18``: ResNet-18 for 224x224 (7x7 stride-2 stem, max pool, basic blocks
  64-128-256-512).
* ``mobilenet_v2``: MobileNetV2 for 224x224 (width 1.0, the paper's table 2).
"""

from __future__ import annotations

from torch import nn


def lenet(conv=nn.Conv2d, num_classes=10):
    """LeNet-5 for (N, 3, 32, 32): conv 5x5 -> 28 -> pool 14 -> conv 5x5 -> 10 -> pool 5."""
    return nn.Sequential(
        conv(3, 6, 5), nn.ReLU(), nn.AvgPool2d(2),           # (N, 6, 14, 14)
        conv(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2),          # (N, 16, 5, 5)
        nn.Flatten(),                                        # (N, 400)
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, num_classes))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm; a 1x1 projection when the shape changes."""

    def __init__(self, conv, c_in, c_out, stride):
        super().__init__()
        self.conv1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


def _resnet(conv, stem, widths, blocks, num_classes):
    layers, c_in = list(stem), widths[0]
    for i, (width, n) in enumerate(zip(widths, blocks)):
        for j in range(n):
            layers.append(BasicBlock(conv, c_in, width, 2 if (i > 0 and j == 0) else 1))
            c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


def resnet_cifar(conv=nn.Conv2d, num_classes=10, blocks=(3, 3, 3)):
    """ResNet-20 for (N, 3, 32, 32): 16/32/64 channels on 32/16/8-pixel maps."""
    stem = [conv(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
    return _resnet(conv, stem, (16, 32, 64), blocks, num_classes)


def resnet18(conv=nn.Conv2d, num_classes=1000):
    """ResNet-18 for (N, 3, 224, 224)."""
    stem = [conv(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
            nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1)]
    return _resnet(conv, stem, (64, 128, 256, 512), (2, 2, 2, 2), num_classes)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 linear projection."""

    def __init__(self, conv, c_in, c_out, stride, expand):
        super().__init__()
        hidden = c_in * expand
        layers = []
        if expand != 1:
            layers += [conv(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
        layers += [conv(hidden, hidden, 3, stride=stride, padding=1, groups=hidden,
                        bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   conv(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


def _mobilenet(conv, settings, stem_stride, last, num_classes):
    layers = [conv(3, 32, 3, stride=stem_stride, padding=1, bias=False), nn.BatchNorm2d(32),
              nn.ReLU6(inplace=True)]
    c_in = 32
    for expand, c_out, n, stride in settings:
        for j in range(n):
            layers.append(InvertedResidual(conv, c_in, c_out, stride if j == 0 else 1, expand))
            c_in = c_out
    layers += [conv(c_in, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last, num_classes)]
    return nn.Sequential(*layers)


# (expansion t, output channels c, repeats n, first stride s): the paper's table 2
_MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                 (6, 160, 3, 2), (6, 320, 1, 1)]
# for 32x32: the stem and the 24-channel stage keep the resolution (32 -> 16 -> 8 -> 4)
_MOBILENET_V2_CIFAR = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v2_cifar(conv=nn.Conv2d, num_classes=10):
    """MobileNetV2 for (N, 3, 32, 32): maps of 32, 16, 8 and 4 pixels."""
    return _mobilenet(conv, _MOBILENET_V2_CIFAR, 1, 1280, num_classes)


def mobilenet_v2(conv=nn.Conv2d, num_classes=1000):
    """MobileNetV2 (width 1.0) for (N, 3, 224, 224)."""
    return _mobilenet(conv, _MOBILENET_V2, 2, 1280, num_classes)


class ConvNeXtBlock(nn.Module):
    """7x7 depthwise, GroupNorm(1, C) (LayerNorm over C, H, W), 1x1 MLP x4 with GELU."""

    def __init__(self, conv, dim):
        super().__init__()
        self.dwconv = conv(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.GroupNorm(1, dim)
        self.pwconv1 = conv(dim, 4 * dim, 1)
        self.act = nn.GELU()
        self.pwconv2 = conv(4 * dim, dim, 1)

    def forward(self, x):
        return x + self.pwconv2(self.act(self.pwconv1(self.norm(self.dwconv(x)))))


def convnext_cifar(conv=nn.Conv2d, num_classes=10, dims=(48, 96, 192), depths=(2, 2, 2)):
    """ConvNeXt-style network for (N, 3, 32, 32): 2x2 patchify stem, maps of 16, 8, 4."""
    layers = [conv(3, dims[0], 2, stride=2), nn.GroupNorm(1, dims[0])]
    for i, (dim, depth) in enumerate(zip(dims, depths)):
        if i > 0:
            layers += [nn.GroupNorm(1, dims[i - 1]), conv(dims[i - 1], dim, 2, stride=2)]
        layers += [ConvNeXtBlock(conv, dim) for _ in range(depth)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(dims[-1]),
               nn.Linear(dims[-1], num_classes)]
    return nn.Sequential(*layers)


#: name -> (builder, input shape of one sample)
MODELS = {
    "lenet": (lenet, (3, 32, 32)),
    "resnet_cifar": (resnet_cifar, (3, 32, 32)),
    "mobilenet_v2_cifar": (mobilenet_v2_cifar, (3, 32, 32)),
    "convnext_cifar": (convnext_cifar, (3, 32, 32)),
    "resnet18": (resnet18, (3, 224, 224)),
    "mobilenet_v2": (mobilenet_v2, (3, 224, 224)),
}
