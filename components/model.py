"""The classifier networks, their saved form, and prediction - shared by train, evaluate and the served model.
Which network a data kind trains, and how it is configured, is the kind's (components/kinds/)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from components.params import Params


class SmallCNN(nn.Module):
    """Two conv blocks and a global average pool: size-agnostic, fast on CPU, enough for small images."""

    def __init__(self, in_channels: int, n_classes: int, width: int = 32):
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, width),
            *block(width, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            *block(2 * width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """Fully connected layers for tables: scaled numeric and one-hot features in, class logits out."""

    def __init__(self, in_features: int, n_classes: int, hidden: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(in_features, size), nn.ReLU(inplace=True), nn.Dropout(0.1)]
            in_features = size
        self.net = nn.Sequential(*layers, nn.Linear(in_features, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def resnet18(in_channels: int, n_classes: int) -> nn.Module:
    """torchvision's ResNet-18 (11 M parameters) with the CIFAR stem: small images (e.g. 32x32) keep their
    resolution through a 3x3 stride-1 first conv and no max-pool."""
    try:
        from torchvision.models import resnet18 as tv_resnet18
    except ImportError:
        from components.errors import UserError

        raise UserError("train.arch resnet18 needs torchvision: pip install -e '.[vision]'") from None
    net = tv_resnet18(num_classes=n_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def build_model(config: dict, params: Params | None = None) -> nn.Module:
    """The network a saved config describes, built by the data kind whose network it is (components/kinds/):
    images (n, c, h, w) -> "cnn" or "resnet18", table rows (n, features) -> "mlp", token ids -> "bilstm" or
    "transformer". With params, as training starts it (a transformer from its pretrained weights); without,
    to load saved weights into. Raises UserError for an arch no kind builds."""
    from components import kinds

    return kinds.for_network(config).build_network(config, params)


def model_config(x: np.ndarray, classes: list[str], params: Params) -> dict:
    """What it takes to rebuild the network train.arch names for the data kind whose model input is shaped
    like x (preprocessed, n first), with the class names. Raises UserError when no kind takes x."""
    from components import kinds

    return kinds.for_model_input(x).network_config(x.shape, classes, params)


def save_model(path: str | Path, net: nn.Module, config: dict) -> None:
    """config: model_config(...), what it takes to rebuild the net, with the class names. The same weights
    give the same bytes: torch.save names the zip's top folder after a file *name* (here a random
    temporary one), but after nothing when given an open file."""
    from components.io import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save({"config": config, "state_dict": net.state_dict()}, fh)


def weights_hash(path: str | Path) -> str:
    """sha256 (hex, 64 characters) of a saved model's config and of every tensor in its state dict (name,
    dtype, shape, values), in order: what the model *is*, whatever bytes torch.save chose to write it in.
    Raises UserError naming the file when it is not a saved model of plain weights."""
    import hashlib
    import json

    saved = load_saved(path)
    digest = hashlib.sha256(json.dumps(saved["config"], sort_keys=True).encode())
    for name, tensor in saved["state_dict"].items():
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_saved(path: str | Path, device: str = "cpu") -> dict:
    """What save_model wrote ({"config", "state_dict"}), loaded with torch.load(weights_only=True): tensors
    and plain containers only, so a crafted file cannot run code. Raises UserError naming the file when it
    is not such a file."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of what it then refuses
            warnings.simplefilter("ignore", UserWarning)
            saved = torch.load(path, map_location=device, weights_only=True)
        if not (isinstance(saved, dict) and isinstance(saved.get("config"), dict) and "state_dict" in saved):
            raise ValueError("no config and state_dict")
        return saved
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        from components.errors import UserError

        raise UserError(
            f"{path}: not a saved model of plain weights (torch.load(weights_only=True) refused it: "
            f"{type(exc).__name__}); it is not loaded: rerun train"
        ) from None


def load_model(path: str | Path, device: str = "cpu") -> tuple[nn.Module, dict]:
    """A model saved by save_model, on `device`, in eval mode, with its config (see load_saved).
    Raises UserError naming the file when it is not such a model."""
    saved = load_saved(path, device)
    config = saved["config"]
    net = build_model(config).to(device)
    net.load_state_dict(saved["state_dict"])
    return net.eval(), config


@torch.no_grad()
def predict_proba(net: nn.Module, x: np.ndarray, batch_size: int = 512, device: str = "cpu") -> np.ndarray:
    """Model input (images (n, c, h, w), table rows (n, features) or token ids (n, L)) -> class probabilities
    float32 (n, classes)."""
    net.eval()
    out = [
        torch.softmax(net(torch.from_numpy(x[i : i + batch_size]).to(device)), dim=1).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def resolve_device(requested: str, key: str = "train.device") -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        from components.errors import UserError

        raise UserError(f"params.yaml: {key} is 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return requested
