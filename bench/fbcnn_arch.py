"""FBCNN's network (Jiang et al., ICCV 2021) with its published layer sizes, for speed rows only
(random weights; nothing here restores). Written from the paper's description and the sizes
of its public code: a U-Net with widths 64/128/256/512, four residual blocks per level,
2x2 strided-conv downsampling, 2x2 transposed-conv upsampling, a quality-factor predictor on
the bottleneck (four residual blocks, pooling, three linear layers) and a quality embedding that
scales and shifts the decoder's residual blocks (QF attention). Input sides are padded to a
multiple of 8, as its code does."""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from napari_jpeg_restore.core.engines.openvino_net import OPENVINO_PRECISION
from torch import nn

WIDTHS = (64, 128, 256, 512)
BLOCKS = 4


class _Res(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _QFRes(_Res):
    """A residual block whose branch is scaled and shifted by the quality embedding."""

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return x + gamma[..., None, None] * self.body(x) + beta[..., None, None]


class FBCNNArch(nn.Module):
    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        w = WIDTHS
        self.head = nn.Conv2d(channels, w[0], 3, padding=1)
        self.downs = nn.ModuleList(
            nn.Sequential(*[_Res(w[i]) for _ in range(BLOCKS)], nn.Conv2d(w[i], w[i + 1], 2, stride=2))
            for i in range(3))
        self.body_encoder = nn.Sequential(*[_Res(w[3]) for _ in range(BLOCKS)])
        self.body_decoder = nn.Sequential(*[_Res(w[3]) for _ in range(BLOCKS)])
        self.qf_pred = nn.Sequential(*[_Res(w[3]) for _ in range(BLOCKS)], nn.AdaptiveAvgPool2d(1),
                                     nn.Flatten(), nn.Linear(512, 512), nn.ReLU(inplace=True),
                                     nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, 1),
                                     nn.Sigmoid())
        self.qf_embed = nn.Sequential(nn.Linear(1, 512), nn.ReLU(inplace=True), nn.Linear(512, 512),
                                      nn.ReLU(inplace=True), nn.Linear(512, 512), nn.ReLU(inplace=True))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in (2, 1, 0))
        self.up_blocks = nn.ModuleList(nn.ModuleList(_QFRes(w[i]) for _ in range(BLOCKS)) for i in (2, 1, 0))
        self.gammas = nn.ModuleList(nn.Sequential(nn.Linear(512, w[i]), nn.Sigmoid()) for i in (2, 1, 0))
        self.betas = nn.ModuleList(nn.Sequential(nn.Linear(512, w[i]), nn.Tanh()) for i in (2, 1, 0))
        self.tail = nn.Conv2d(w[0], channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % 8, 0, (-h) % 8), mode="replicate")
        skips = [self.head(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = self.body_encoder(skips[-1])
        qf = self.qf_pred(y)
        y = self.body_decoder(y)
        embedding = self.qf_embed(qf)
        for level, (up, blocks, gamma, beta) in enumerate(zip(self.ups, self.up_blocks, self.gammas, self.betas)):
            y = up(y + skips[3 - level])
            g, b = gamma(embedding), beta(embedding)
            for block in blocks:
                y = block(y, g, b)
        return self.tail(y + skips[0])[..., :h, :w]


def fbcnn_mps(threads: int, precision: str, engine: str = "torch") -> float:
    """FBCNN's network alone on one 512x512 tile (median of 3 after a warm-up), megapixels/s:
    PyTorch eager (channels-last, bf16 autocast for bf16) or OpenVINO (converted here, as our
    engine runs)."""
    torch.set_num_threads(threads)
    net = FBCNNArch(1).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 1, 512, 512).contiguous(memory_format=torch.channels_last)
    if engine == "openvino":
        from napari_jpeg_restore.core.engines.openvino_import import import_openvino

        ov = import_openvino()
        compiled = ov.Core().compile_model(
            ov.convert_model(net, example_input=(x,), input=[(1, 1, 512, 512)]), "CPU",
            {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY",
             "INFERENCE_NUM_THREADS": threads})
        request, data = compiled.create_infer_request(), x.contiguous().numpy()
        return _median_mps(lambda: request.infer({0: data}))
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        return _median_mps(lambda: net(x))


def _median_mps(call: Callable[[], object], repeats: int = 3) -> float:
    """Megapixels/s of ``call`` on a 512x512 tile: the median of ``repeats`` timed calls after
    one warm-up call (one call alone moved by 1.6x between runs on a KVM guest)."""
    call()
    seconds = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - t)
    return 512 * 512 / 1e6 / sorted(seconds)[repeats // 2]
