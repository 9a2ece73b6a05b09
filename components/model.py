"""The classifier network, its saved form, and prediction - shared by train, evaluate and the served model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two conv blocks and a global average pool: size-agnostic, fast on CPU, enough for digits."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 32):
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, width), *block(width, width), nn.MaxPool2d(2),
            *block(width, 2 * width), *block(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def save_model(path: str | Path, net: SmallCNN, config: dict) -> None:
    """config: what it takes to rebuild the net (in_channels, n_classes, width) plus the class names."""
    from components.io import atomic_path
    with atomic_path(path) as tmp:
        torch.save({"config": config, "state_dict": net.state_dict()}, tmp)


def load_model(path: str | Path, device: str = "cpu") -> tuple[SmallCNN, dict]:
    saved = torch.load(path, map_location=device, weights_only=True)
    config = saved["config"]
    net = SmallCNN(config["in_channels"], len(config["classes"]), config["width"]).to(device)
    net.load_state_dict(saved["state_dict"])
    return net.eval(), config


@torch.no_grad()
def predict_proba(net: nn.Module, x: np.ndarray, batch_size: int = 512, device: str = "cpu") -> np.ndarray:
    """Normalised images (n, c, h, w) -> class probabilities (n, n_classes)."""
    net.eval()
    out = [torch.softmax(net(torch.from_numpy(x[i:i + batch_size]).to(device)), dim=1).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        from components.errors import UserError
        raise UserError("params.yaml: train.device is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return requested
