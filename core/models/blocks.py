"""Building blocks shared by the networks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


class BNResBlock(nn.Module):
    """conv-BN-ReLU-conv-BN with an identity skip (the encoder's block)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(ch, ch, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
            conv3x3(ch, ch, bias=False), nn.BatchNorm2d(ch),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class ResBlock(nn.Module):
    """conv-LeakyReLU-conv with an identity skip (the φ of the fusion modules, decoder blocks)."""

    def __init__(self, ch: int, slope: float = 0.2) -> None:
        super().__init__()
        self.conv1 = conv3x3(ch, ch)
        self.conv2 = conv3x3(ch, ch)
        self.slope = slope

    def reset_identity(self) -> None:
        """The block computes the identity (its last convolution zeroed): ``models.growth``."""
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), self.slope))


def res_blocks(ch: int, n: int) -> nn.Sequential:
    """``n`` residual blocks of ``ch`` channels (none: the identity)."""
    return nn.Sequential(*[ResBlock(ch) for _ in range(n)])


def upsample(cin: int, cout: int) -> nn.Module:
    """x2 upsampling: a 1x1 convolution to 4x ``cout`` channels, then pixel-shuffle."""
    return nn.Sequential(nn.Conv2d(cin, 4 * cout, 1), nn.PixelShuffle(2))


class LocalAttentionBlock(nn.Module):
    """RNAN-style local attention: trunk * sigmoid(mask) + input.

    The mask branch sees a larger context through one strided convolution and its
    pixel-shuffle upsampling back, as RNAN's local mask branch does with down/up sampling.
    """

    def __init__(self, ch: int, trunk_blocks: int = 2) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*[ResBlock(ch) for _ in range(trunk_blocks)])
        self.mask = nn.Sequential(
            conv3x3(ch, ch, stride=2), nn.LeakyReLU(0.2, inplace=True),
            ResBlock(ch),
            nn.Conv2d(ch, 4 * ch, 1), nn.PixelShuffle(2),
            nn.Conv2d(ch, ch, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.trunk(x) * self.mask(x)


class InvertibleFusion(nn.Module):
    """Invertible fusion of encoder features E into decoder features D.

    F1 = E + φ1(D);  F2 = D ⊙ exp(s(φ2(F1))) + φ3(F1);  F = conv1x1([F1, F2]).
    The log-scale is bounded with ``clamp·tanh(·/clamp)`` (the usual guard in affine coupling
    layers) so exp() cannot overflow early in training.
    """

    def __init__(self, ch: int, clamp: float = 1.0) -> None:
        super().__init__()
        self.phi1, self.phi2, self.phi3 = ResBlock(ch), ResBlock(ch), ResBlock(ch)
        self.fuse = nn.Conv2d(2 * ch, ch, 1)
        self.clamp = clamp

    def forward(self, e: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        f1 = e + self.phi1(d)
        log_scale = self.clamp * torch.tanh(self.phi2(f1) / self.clamp)
        f2 = d * torch.exp(log_scale) + self.phi3(f1)
        return self.fuse(torch.cat([f1, f2], dim=1))


class FeatureFusion(nn.Module):
    """EFFM: fuse three neighbouring encoder scales at the middle one's resolution.

    E' = conv3x3(conv1x1([down(E_fine), E_mid, up(E_coarse)])).
    """

    def __init__(self, c_fine: int, c_mid: int, c_coarse: int, cout: int) -> None:
        super().__init__()
        self.down = conv3x3(c_fine, c_mid, stride=2)
        self.mix = nn.Sequential(
            nn.Conv2d(2 * c_mid + c_coarse, cout, 1),
            nn.LeakyReLU(0.2, inplace=True),
            conv3x3(cout, cout),
        )

    def forward(self, fine: torch.Tensor, mid: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(coarse, size=mid.shape[-2:], mode="bilinear", align_corners=False)
        return self.mix(torch.cat([self.down(fine), mid, up], dim=1))
