"""Small images for TensorBoard, drawn directly as tensors (no plotting library needed).

A spike raster is already an image (neurons x time); a line plot (membrane traces, a surrogate
derivative) is rasterised here column by column. All functions return float images in [0, 1],
``[3, H, W]`` (``CHW``, what ``SummaryWriter.add_image`` takes by default).
"""

from __future__ import annotations

import torch

#: distinct line colours (RGB in [0, 1]), cycled over traces
PALETTE = torch.tensor(
    [
        [0.12, 0.47, 0.71],
        [1.00, 0.50, 0.05],
        [0.17, 0.63, 0.17],
        [0.84, 0.15, 0.16],
        [0.58, 0.40, 0.74],
        [0.55, 0.34, 0.29],
        [0.89, 0.47, 0.76],
        [0.50, 0.50, 0.50],
        [0.74, 0.74, 0.13],
        [0.09, 0.75, 0.81],
    ]
)


def _upscale(image: torch.Tensor, min_size: tuple[int, int]) -> torch.Tensor:
    """Repeat pixels (nearest neighbour) so a tiny raster is visible; ``image`` is ``[H, W]``."""
    h, w = image.shape
    sy, sx = max(1, min_size[0] // h), max(1, min_size[1] // w)
    return image.repeat_interleave(sy, 0).repeat_interleave(sx, 1)


def spike_raster(spikes: torch.Tensor, min_size: tuple[int, int] = (128, 400)) -> torch.Tensor:
    """Raster of one sample's activity ``[T, N]`` as an image: neuron 0 on top, time to the right.

    Black background, white spikes; analog input (e.g. direct encoding) is scaled by its maximum
    so its intensity shows as grey levels.
    """
    if spikes.dim() != 2:
        raise ValueError(f"spike_raster expects [T, N], got shape {tuple(spikes.shape)}")
    z = spikes.detach().float().cpu().abs().t()  # [N, T]
    peak = z.max()
    if peak > 0:
        z = z / peak
    return _upscale(z, min_size).expand(3, -1, -1).clone()


def line_plot(
    y: torch.Tensor, height: int = 160, min_width: int = 320, highlight: int | None = None
) -> torch.Tensor:
    """Plot ``y [P, K]`` (K lines over P points) on a white image, auto-scaled to its range.

    A grey line marks ``y = 0`` when it is inside the range; ``highlight`` draws that line thicker
    (e.g. the true class among readout traces).
    """
    if y.dim() == 1:
        y = y[:, None]
    if y.dim() != 2 or y.shape[0] < 2:
        raise ValueError(f"line_plot expects [P >= 2, K] values, got shape {tuple(y.shape)}")
    y = y.detach().float().cpu()
    points, lines = y.shape
    scale_x = max(1, -(-min_width // points))
    width = points * scale_x
    lo, hi = float(y.min()), float(y.max())
    if hi - lo < 1e-12:
        lo, hi = lo - 1.0, hi + 1.0
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad

    def row(v: torch.Tensor) -> torch.Tensor:  # value -> pixel row (0 at the top)
        return ((hi - v) / (hi - lo) * (height - 1)).round().long().clamp(0, height - 1)

    image = torch.ones(3, height, width)
    if lo < 0 < hi:
        image[:, row(torch.tensor(0.0)), :] = 0.8
    # x position of each column, interpolated between the P points
    xs = torch.linspace(0, points - 1, width)
    left = xs.floor().long().clamp(max=points - 2)
    frac = xs - left
    cols = torch.arange(width)
    for k in range(lines):
        values = y[left, k] * (1 - frac) + y[left + 1, k] * frac
        rows = row(values)
        prev = torch.cat([rows[:1], rows[:-1]])
        colour = PALETTE[k % len(PALETTE)]
        thick = 1 if k == highlight else 0
        # fill the vertical span between consecutive columns so steep segments stay connected
        top = torch.minimum(rows, prev) - thick
        bottom = torch.maximum(rows, prev) + thick
        for r in range(height):
            mask = (top <= r) & (r <= bottom)
            if mask.any():
                image[:, r, cols[mask]] = colour[:, None]
    return image
