"""Stream networks: a torchvision ResNet trunk with the seed project's classifier head.

Layouts: every model takes ``(B, C, H, W) float32`` and returns ``(B, num_classes)``
logits; ``C`` is 3 for rgb and sg3i, ``2L`` for a stack of L flow fields.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

log = logging.getLogger(__name__)

BACKBONES = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V2),
}


def head(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    """The seed project's head: two FC layers with ReLU and dropout between them."""
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


def conv_like(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A new conv of ``conv``'s geometry (outputs, kernel, stride, padding, bias) for ``in_channels`` inputs."""
    return nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     bias=conv.bias is not None)


def cross_modality_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A first conv for ``in_channels`` inputs initialised from an RGB conv.

    The RGB kernel is averaged over its 3 input channels and repeated ``in_channels``
    times (TSN's cross-modality initialisation), so a flow stack starts from the same
    edge detectors an appearance stream has.

    Args:
        conv: the trunk's first conv, weight ``(out, 3, kh, kw)``.
        in_channels: input channels of the new conv (e.g. ``2L`` for flow).

    Returns:
        A new conv with weight ``(out, in_channels, kh, kw)``.
    """
    new = conv_like(conv, in_channels)
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)  # (out, 1, kh, kw)
        new.weight.copy_(mean.repeat(1, in_channels, 1, 1))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _load_trunk_weights(model: nn.Module, backbone: str, pretrained: str) -> None:
    """Load ImageNet weights (torchvision's weights API) or a local ``.pth`` into ``model``."""
    if pretrained == "none":
        return
    if pretrained == "imagenet":
        # downloads into torch's hub cache on first use: needs internet once
        state = BACKBONES[backbone][1].get_state_dict(progress=True)
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(
                f"model.pretrained must be none, imagenet or a path to a .pth file; got {pretrained!r}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state)
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(kept, strict=False)
    log.info("loaded %d/%d trunk tensors from %s", len(kept), len(own), pretrained)


def build_model(backbone: str, num_classes: int, in_channels: int = 3, pretrained: str = "none",
                hidden: int = 512, dropout: float = 0.5) -> nn.Module:
    """A stream network.

    Args:
        backbone: ``resnet18`` or ``resnet50``.
        num_classes: outputs of the head.
        in_channels: 3 for rgb/sg3i, ``2L`` for flow: the first conv via ``cross_modality_conv``
            when ``pretrained`` is not ``none``, else initialised as torchvision initialises it.
        pretrained: ``none``, ``imagenet`` or a path to a local ``.pth`` state dict.
        hidden: width of the head's hidden FC layer.
        dropout: dropout probability between the head's two FC layers.

    Returns:
        The model, taking ``(B, in_channels, H, W) float32`` and giving ``(B, num_classes)`` logits.

    Raises:
        ValueError: on an unknown backbone or bad sizes.
        FileNotFoundError: if ``pretrained`` is neither keyword nor an existing file.
    """
    if backbone not in BACKBONES:
        raise ValueError(f"model.backbone must be one of {', '.join(BACKBONES)}; got {backbone!r}")
    if num_classes < 2 or in_channels < 1:
        raise ValueError(f"need num_classes >= 2 and in_channels >= 1; got {num_classes}, {in_channels}")
    model = BACKBONES[backbone][0](weights=None)
    _load_trunk_weights(model, backbone, pretrained)
    if in_channels != 3 and pretrained != "none":
        model.conv1 = cross_modality_conv(model.conv1, in_channels)
    elif in_channels != 3:  # from scratch: torchvision's own init, every input channel its own kernel
        model.conv1 = conv_like(model.conv1, in_channels)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.fc = head(model.fc.in_features, hidden, num_classes, dropout)
    return model


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` in module order (``bn1`` of the trunk first)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def freeze_partial_bn(model: nn.Module) -> int:
    """TSN's partial BatchNorm: every BatchNorm layer but the first keeps its statistics and
    affine parameters (``requires_grad`` False). Call ``partial_bn_mode`` after each ``train()``.

    Returns:
        The number of frozen layers.
    """
    frozen = batchnorms(model)[1:]
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    return len(frozen)


def partial_bn_mode(model: nn.Module) -> None:
    """Put every BatchNorm layer but the first in eval mode (running statistics used, not updated)."""
    for m in batchnorms(model)[1:]:
        m.eval()


def channels_last(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` on ``device`` with its 4-D weights stored channels_last, as ``Module.to(memory_format=
    torch.channels_last)`` stores them; the 5-D weights of a 3D convolution (conv fusion over time)
    stay as they are, where ``Module.to`` would refuse them."""
    model = model.to(device)
    for p in model.parameters():
        if p.dim() == 4:
            p.data = p.data.to(memory_format=torch.channels_last)  # as Module.to strides it, 1x1 too
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

