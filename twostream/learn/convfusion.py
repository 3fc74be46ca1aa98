"""Fusion inside the network (Feichtenhofer, Pinz & Zisserman, CVPR 2016): the two trained stream
trunks joined by a learnt layer at a chosen depth, as ``fusion: conv``.

``ConvFusionNet`` is built from the two trained streams (``models.build_model`` networks with
their weights): both trunks up to the fusion layer (``fuse.layer``: ``layer3`` or ``layer4`` of
the ResNets), the fusion function (``fuse.function``), optionally a fusion over time
(``fuse.time``), then the rest of the spatial trunk and its head. As in the paper, the flow tower
(the whole temporal network) is kept beside it, and the layers below the fusion point are frozen
by default (``fuse.freeze``).

Fusion functions of the two ``(N, C, h, w)`` maps ``a`` (appearance) and ``b`` (motion):

- ``conv``: concatenation, then a learnt 1x1 convolution back to C channels, initialised to
  ``[I, I]`` with a zero bias, so that at step 0 it is the sum ``a + b`` (the paper's conv fusion);
- ``sum``: ``a + b``; ``max``: their element-wise maximum (no parameters);
- ``concat``: the 2C channels as they are, the next layer widened to take them (its weights on
  the motion half start at zero, so at step 0 the net is the spatial stream).

Time (``fuse.time``): ``none`` fuses one snippet; ``3d`` fuses each of ``fuse.snippets`` (T)
snippets drawn across the video, then a 3x3x3 convolution over (time, height, width), initialised
to the identity, and a 3D max-pooling over all T snippets (3x3 in space, stride 1): the paper's
3D conv + 3D pooling.

Layouts: the network takes ``(N, T * (3 + C_m), H, W) float32``: per snippet the RGB sample's 3
channels, then the motion sample's ``C_m`` (``2L`` for flow, 3 for SG3I), T snippets one after the
other (``pairs.PairedPreset`` makes them). In training mode it returns the fused tower's logits
``(N, K)``; in eval mode the log of the video score ``(1 - w) softmax(fused) + w softmax(flow
tower)`` with ``w = fuse.flow_tower`` (the flow tower's softmax averaged over the T snippets), so
that ``scoring.predict``'s softmax gives that combination.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

LAYERS = ("layer3", "layer4")
FUNCTIONS = ("conv", "sum", "max", "concat")
TIMES = ("none", "3d")
_ORDER = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def trunk_below(net: nn.Module, layer: str) -> nn.Sequential:
    """A ResNet's modules up to and including ``layer``: ``(N, C_in, H, W)`` -> the map fused there."""
    return nn.Sequential(*[getattr(net, name) for name in _ORDER[:_ORDER.index(layer) + 1]])


def trunk_above(net: nn.Module, layer: str) -> nn.Sequential:
    """A ResNet's modules after ``layer``, its pooling and its head: the fused map -> ``(N, K)`` logits."""
    rest = [getattr(net, name) for name in _ORDER[_ORDER.index(layer) + 1:]]
    return nn.Sequential(*rest, net.avgpool, nn.Flatten(1), net.fc)


def map_channels(net: nn.Module, layer: str) -> int:
    """Channels of the map a ResNet's ``layer`` outputs (the last conv's outputs of its last block)."""
    block = getattr(net, layer)[-1]
    last = block.conv3 if hasattr(block, "conv3") else block.conv2
    return last.out_channels


def _widened(module: nn.Module, extra: int) -> nn.Module:
    """A copy of a conv or linear layer taking ``extra`` more input channels, whose weights on them
    are zero (so it gives what the original gives whatever those channels hold)."""
    if isinstance(module, nn.Conv2d):
        new = nn.Conv2d(module.in_channels + extra, module.out_channels, module.kernel_size, module.stride,
                        module.padding, bias=module.bias is not None)
    elif isinstance(module, nn.Linear):
        new = nn.Linear(module.in_features + extra, module.out_features, bias=module.bias is not None)
    else:  # pragma: no cover - the ResNets' next layers are one of the two
        raise TypeError(f"cannot widen a {type(module).__name__}")
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :module.weight.shape[1]] = module.weight
        if module.bias is not None:
            new.bias.copy_(module.bias)
    return new


def widen_for_concat(above: nn.Sequential, layer: str, extra: int) -> None:
    """Let the first layers after the fusion point take the concatenated map's ``extra`` channels:
    the first block of ``layer4`` (its first conv and its shortcut) after ``layer3``, the head's
    first linear layer after ``layer4``."""
    if layer == "layer3":
        block = above[0][0]
        block.conv1 = _widened(block.conv1, extra)
        block.downsample[0] = _widened(block.downsample[0], extra)
    else:
        head = above[-1]
        head[0] = _widened(head[0], extra)


class FusionLayer(nn.Module):
    """One of ``FUNCTIONS`` on two ``(N, C, h, w)`` maps; ``conv`` starts as their sum."""

    def __init__(self, function: str, channels: int) -> None:
        super().__init__()
        if function not in FUNCTIONS:
            raise ValueError(f"fuse.function must be one of {', '.join(FUNCTIONS)}; got {function!r}")
        self.function = function
        self.conv = nn.Conv2d(2 * channels, channels, 1) if function == "conv" else None
        if self.conv is not None:
            with torch.no_grad():
                eye = torch.eye(channels)[:, :, None, None]
                self.conv.weight.copy_(torch.cat([eye, eye], dim=1))  # [I, I]: a + b
                self.conv.bias.zero_()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.function == "sum":
            return a + b
        if self.function == "max":
            return torch.maximum(a, b)
        stacked = torch.cat([a, b], dim=1)  # (N, 2C, h, w)
        return stacked if self.conv is None else self.conv(stacked)


class TimeFusion(nn.Module):
    """``(N * T, C, h, w)`` fused maps of T snippets -> ``(N, C, h, w)``: a 3x3x3 conv over time and
    space (identity at step 0), then a max over the T snippets and a 3x3 neighbourhood."""

    def __init__(self, channels: int, snippets: int) -> None:
        super().__init__()
        self.snippets = snippets
        self.conv = nn.Conv3d(channels, channels, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, :, 1, 1, 1] = torch.eye(channels)
            self.conv.bias.zero_()
        self.pool = nn.MaxPool3d((snippets, 3, 3), stride=(snippets, 1, 1), padding=(0, 1, 1))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = y.shape
        volume = y.reshape(nt // self.snippets, self.snippets, c, h, w).transpose(1, 2)  # (N, C, T, h, w)
        return self.pool(self.conv(volume.contiguous())).squeeze(2)


class ConvFusionNet(nn.Module):
    """The fused two-stream network (module docstring): ``(N, T * (3 + C_m), H, W)`` -> ``(N, K)``."""

    def __init__(self, spatial: nn.Module, temporal: nn.Module, motion_channels: int, layer: str = "layer4",
                 function: str = "conv", time: str = "none", snippets: int = 1, flow_tower: float = 0.5,
                 freeze: bool = True) -> None:
        """Join copies of the two trained stream networks.

        Raises:
            ValueError: on a layer, function or time not allowed, ``snippets`` < 1 (or not 1 with time
                ``none``), a ``flow_tower`` weight outside [0, 1], or trunks of other widths.
        """
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"fuse.layer must be one of {', '.join(LAYERS)}; got {layer!r}")
        if time not in TIMES:
            raise ValueError(f"fuse.time must be one of {', '.join(TIMES)}; got {time!r}")
        if snippets < 1 or (time == "none" and snippets != 1):
            raise ValueError(f"fusion snippets must be 1 with time none, >= 1 with 3d; got {snippets} ({time})")
        if not 0.0 <= flow_tower <= 1.0:
            raise ValueError(f"fuse.flow_tower must be in [0, 1]; got {flow_tower}")
        spatial, temporal = copy.deepcopy(spatial), copy.deepcopy(temporal)
        channels = map_channels(spatial, layer)
        if map_channels(temporal, layer) != channels:
            raise ValueError(f"the two trunks give {channels} and {map_channels(temporal, layer)} channels at {layer}")
        self.layer, self.function, self.time = layer, function, time
        self.snippets, self.motion_channels, self.flow_tower, self.freeze = snippets, motion_channels, flow_tower, freeze
        self.appearance = trunk_below(spatial, layer)
        self.motion = trunk_below(temporal, layer)
        self.fusion = FusionLayer(function, channels)
        self.over_time = TimeFusion(2 * channels if function == "concat" else channels, snippets) \
            if time == "3d" else None
        self.above = trunk_above(spatial, layer)
        if function == "concat":
            widen_for_concat(self.above, layer, channels)
        # the flow tower: the whole temporal stream, kept beside and never trained (its own copy:
        # the motion trunk above may be trained with freeze false)
        self.tower = copy.deepcopy(temporal)
        frozen = [self.tower, *([self.appearance, self.motion] if freeze else [])]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)
        self._frozen = frozen

    def train(self, mode: bool = True) -> ConvFusionNet:
        """Frozen parts stay in eval mode (their BatchNorm statistics are not updated)."""
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, T * (3 + C_m), H, W)`` -> the RGB ``(N * T, 3, H, W)`` and motion ``(N * T, C_m, H, W)`` inputs."""
        n, _, h, w = x.shape
        per = x.reshape(n * self.snippets, 3 + self.motion_channels, h, w)
        return per[:, :3], per[:, 3:]

    def fused_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The two trunks' maps at the fusion layer and the fused map (per snippet), for tests."""
        rgb, motion = self.split(x)
        a, b = self.appearance(rgb), self.motion(motion)
        return a, b, self.fusion(a, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb, motion = self.split(x)
        y = self.fusion(self.appearance(rgb), self.motion(motion))  # (N * T, C, h, w)
        if self.over_time is not None:
            y = self.over_time(y)  # (N, C, h, w)
        logits = self.above(y)  # (N, K)
        if self.training:
            return logits
        tower = self.tower(motion).float().softmax(dim=1)  # (N * T, K)
        tower = tower.reshape(logits.shape[0], -1, tower.shape[1]).mean(dim=1)
        p = (1 - self.flow_tower) * logits.float().softmax(dim=1) + self.flow_tower * tower
        return p.clamp_min(1e-12).log()
