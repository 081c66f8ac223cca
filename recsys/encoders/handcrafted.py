"""A training-free image encoder built from visual statistics: the offline stand-in that carries meaning.

No fashion image weights are reachable offline, and a random-weight ViT maps every crop to nearly the
same vector (cosine ~0.99), so nothing downstream can learn from it. This encoder measures what a
person sees first in a garment photo, deterministically and with no learned weights:

- **colour**: a soft joint histogram in CIELAB (perceptual: equal steps look equally different),
  over the garment's pixels only (foreground = far from the background colour read off the border);
- **edges and texture**: Sobel edge-orientation histograms (whole image and a 2x2 grid, weighted by
  edge strength) and a histogram of edge strength inside the garment (plain vs patterned);
- **silhouette**: the foreground mask on an 8x8 grid, plus area, centroid, second moments and the
  bounding box's aspect ratio.

Each block is a histogram (or mask) taken to its square root (Hellinger), centred by its own mean
(so garments with disjoint colours point in different directions instead of all sharing the positive
orthant) and scaled to a fixed weight. The edge-orientation block is not re-normalised: a cell with
no edges keeps a near-empty histogram (each cell is divided by at least ``EDGE_FLOOR`` per pixel),
so a flat region adds nothing rather than a full-weight vector of rounding noise, which would differ
between CPU and GPU; the concatenation goes through a fixed orthonormal projection
to ``dim`` (512, the width of the CLIP models it stands in for), which keeps every cosine as it was.
Reports name it ``pretrained: none (hand-crafted stand-in)``: real encoders replace it by config.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from PIL import Image

HAND_CRAFTED = "hand-crafted"                      # image.model that selects it
HAND_CRAFTED_LABEL = "none (hand-crafted stand-in)"
SIDE = 64                                          # images are padded square and resized to SIDE x SIDE
L_BINS, AB_BINS = 4, 6                             # joint L*a*b* colour histogram: 4 x 6 x 6 bins
ORIENTATION_BINS, STRENGTH_BINS, MASK_GRID = 8, 6, 8
BLOCK_WEIGHTS = {"colour": 1.0, "edges": 0.6, "texture": 0.35, "silhouette": 0.7, "moments": 0.3}
FOREGROUND_DELTA_E = 12.0                          # CIELAB distance from the background that counts as garment
EDGE_FLOOR = 1.0                                   # mean Sobel strength (L* units) a cell needs to count as edged


def square_pad(image: Image.Image, side: int = SIDE) -> np.ndarray:
    """RGB image -> (side, side, 3) uint8: padded to a square with its own border colour (so the
    silhouette keeps its aspect ratio), then resized."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    width, height = image.size
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    fill = tuple(int(v) for v in np.median(border, axis=0))
    size = max(width, height)
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(image, ((size - width) // 2, (size - height) // 2))
    return np.asarray(canvas.resize((side, side), Image.BILINEAR))


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) sRGB in [0, 1] -> CIELAB (D65): L in [0, 100], a/b roughly [-100, 100]."""
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                           [0.2126729, 0.7151522, 0.0721750],
                           [0.0193339, 0.1191920, 0.9503041]], dtype=rgb.dtype, device=rgb.device)
    xyz = torch.einsum("ij,njhw->nihw", matrix, linear)
    white = torch.tensor([0.95047, 1.0, 1.08883], dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    t = xyz / white
    f = torch.where(t > (6 / 29) ** 3, t.clamp_min(1e-12) ** (1 / 3), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def _soft_bins(values: torch.Tensor, low: float, high: float, bins: int) -> torch.Tensor:
    """(...,) values -> (..., bins) triangular memberships over evenly spaced centres (sum 1)."""
    position = ((values - low) / (high - low) * (bins - 1)).clamp(0, bins - 1)
    centres = torch.arange(bins, dtype=values.dtype, device=values.device)
    return (1 - (position.unsqueeze(-1) - centres).abs()).clamp_min(0)


def _block(histogram: torch.Tensor, weight: float, unit: bool = True) -> torch.Tensor:
    """Histogram rows -> Hellinger (square root), centred by each row's own mean, x weight; scaled
    to unit length first when ``unit``. Without it (edge histograms, which sum to at most 1) a
    near-empty row stays near zero instead of becoming a full-weight vector of rounding noise."""
    root = histogram.clamp_min(0).sqrt()
    root = root - root.mean(dim=1, keepdim=True)
    return weight * (torch.nn.functional.normalize(root, dim=1) if unit else root)


class HandCraftedFeatures(torch.nn.Module):
    """(N, 3, SIDE, SIDE) pixels in [0, 1] -> (N, dim) features (not yet unit length). No trained
    weights: its only tensor is the fixed projection, drawn from ``seed``."""

    def __init__(self, dim: int = 512, seed: int = 0):
        super().__init__()
        width = (L_BINS * AB_BINS * AB_BINS + 5 * ORIENTATION_BINS + STRENGTH_BINS + MASK_GRID * MASK_GRID + 6)
        if dim < width:
            raise ValueError(f"image.dim {dim}: the hand-crafted encoder needs at least {width} dimensions")
        generator = torch.Generator().manual_seed(seed)
        q, r = torch.linalg.qr(torch.randn(dim, width, generator=generator, dtype=torch.float64))
        self.register_buffer("projection", (q * torch.sign(torch.diagonal(r))).float())  # orthonormal columns
        self.dim = dim

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # Always float32, also under a caller's autocast (the embed job's on CUDA): the colour
        # conversion's powers and the histograms lose bins in half precision, and the same crop must
        # give the same vector on every device; nothing here is matrix-bound enough to gain from AMP.
        with torch.autocast(device_type=pixels.device.type, enabled=False):
            lab = rgb_to_lab(pixels.float())
            mask = self._foreground(lab)
            blocks = [self._colour(lab, mask), *self._edges(lab[:, 0], mask), *self._silhouette(mask)]
            return torch.cat(blocks, dim=1) @ self.projection.T

    @staticmethod
    def _foreground(lab: torch.Tensor) -> torch.Tensor:
        """Soft garment mask: CIELAB distance from the median border colour; an image with almost no
        foreground (a flat swatch) counts every pixel."""
        border = torch.cat([lab[:, :, 0], lab[:, :, -1], lab[:, :, :, 0], lab[:, :, :, -1]], dim=2)
        background = border.median(dim=2).values[:, :, None, None]
        distance = (lab - background).norm(dim=1)
        mask = torch.sigmoid((distance - FOREGROUND_DELTA_E) / 3.0)
        empty = mask.mean(dim=(1, 2)) < 0.02
        return torch.where(empty[:, None, None], torch.ones_like(mask), mask)

    @staticmethod
    def _colour(lab: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lightness = _soft_bins(lab[:, 0], 0.0, 100.0, L_BINS)
        a, b = (_soft_bins(lab[:, i], -60.0, 60.0, AB_BINS) for i in (1, 2))
        joint = torch.einsum("nhwi,nhwj,nhwk,nhw->nijk", lightness, a, b, mask).flatten(1)
        return _block(joint / joint.sum(dim=1, keepdim=True).clamp_min(1e-8), BLOCK_WEIGHTS["colour"])

    @staticmethod
    def _edges(lightness: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        smooth = torch.nn.functional.avg_pool2d(lightness[:, None], 3, stride=1, padding=1, count_include_pad=False)
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=lightness.device)
        kernels = torch.stack([sobel, sobel.T])[:, None]
        gradient = torch.nn.functional.conv2d(torch.nn.functional.pad(smooth, (1, 1, 1, 1), mode="replicate"), kernels)
        strength = gradient.norm(dim=1)
        angle = torch.atan2(gradient[:, 1], gradient[:, 0]) % math.pi        # unsigned: a stripe either way
        # circular soft bins: orientation ORIENTATION_BINS wraps to 0
        position = angle / math.pi * ORIENTATION_BINS
        centres = torch.arange(ORIENTATION_BINS, device=angle.device, dtype=angle.dtype)
        gap = (position.unsqueeze(-1) - centres).abs()
        member = (1 - torch.minimum(gap, ORIENTATION_BINS - gap)).clamp_min(0)
        weighted = member * strength.unsqueeze(-1)                              # (N, H, W, bins)
        half = lightness.shape[-1] // 2
        cells = [weighted] + [weighted[:, r:r + half, c:c + half] for r in (0, half) for c in (0, half)]
        # a cell with (almost) no edges keeps a near-empty histogram: dividing by its own tiny total
        # would blow rounding noise up into a full histogram
        orientation = torch.cat([cell.sum(dim=(1, 2)) / cell.sum(dim=(1, 2, 3)).clamp_min(
            EDGE_FLOOR * cell.shape[1] * cell.shape[2])[:, None] for cell in cells], dim=1) / len(cells)
        # edge strength inside the garment: plain fabric is mostly weak edges, prints and knits strong
        strengths = _soft_bins(torch.log1p(strength), 0.0, 5.0, STRENGTH_BINS)
        texture = torch.einsum("nhwb,nhw->nb", strengths, mask)
        texture = texture / texture.sum(dim=1, keepdim=True).clamp_min(1e-8)
        return [_block(orientation, BLOCK_WEIGHTS["edges"], unit=False), _block(texture, BLOCK_WEIGHTS["texture"])]

    @staticmethod
    def _silhouette(mask: torch.Tensor) -> list[torch.Tensor]:
        grid = torch.nn.functional.adaptive_avg_pool2d(mask[:, None], MASK_GRID).flatten(1)
        side = mask.shape[-1]
        coords = (torch.arange(side, dtype=mask.dtype, device=mask.device) + 0.5) / side - 0.5
        total = mask.sum(dim=(1, 2)).clamp_min(1e-8)
        ys, xs = mask.sum(dim=2) / total[:, None], mask.sum(dim=1) / total[:, None]  # marginals
        cy, cx = ys @ coords, xs @ coords
        vy, vx = ys @ coords ** 2 - cy ** 2, xs @ coords ** 2 - cx ** 2
        covariance = torch.einsum("nhw,h,w->n", mask, coords, coords) / total - cx * cy
        area = mask.mean(dim=(1, 2))
        aspect = torch.log((vy.clamp_min(1e-6) / vx.clamp_min(1e-6)).sqrt())   # tall > 0, wide < 0
        correlation = covariance / (vx * vy).clamp_min(1e-8).sqrt()              # leaning left or right
        moments = torch.stack([area - 0.5, 4 * cx, 4 * cy, correlation, aspect / 2, 4 * (vx + vy) - 0.5], dim=1)
        return [_block(grid, BLOCK_WEIGHTS["silhouette"]), BLOCK_WEIGHTS["moments"] * moments]


class HandCraftedEncoder:
    """The ``ImageEncoder`` backend: PIL crops -> padded square uint8 arrays (thread-safe) -> one
    float tensor per batch -> ``HandCraftedFeatures``."""

    def __init__(self, seed: int = 0, dim: int = 512):
        self.model = HandCraftedFeatures(dim, seed)
        self.dim = dim

    def prepare(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        return [square_pad(image) for image in images]

    def stack(self, prepared: Sequence[np.ndarray]) -> torch.Tensor:
        if not prepared:
            return torch.zeros((0, 3, SIDE, SIDE))
        return torch.from_numpy(np.stack(prepared)).permute(0, 3, 1, 2).float().div_(255).contiguous()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.stack(self.prepare([image]))[0]

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)
