"""The released MOSS network and its two training steps in PyTorch: the speed reference.

``python -m bench`` times this next to moss-tf, in the same run, to give
ratios that hold on the day and machine they were measured. It is written
from docs/method.md §1–2 (module and parameter names follow the released code, so a
released ``state_dict`` loads as it is) and checked against the released
network's own outputs in ``../shared/fixtures`` by
``tests/test_bench_reference.py``. It is not part of ``moss_tf`` and needs
PyTorch: ``pip install -e .[bench]``.

Tensors are NCHW, images in [-1, 1], as in the released code.

    >>> net = ReleasedNet().eval()
    >>> with torch.inference_mode():
    ...     derained = net(torch.rand(1, 3, 512, 512) * 2 - 1)
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.02
COUNT_EPS = 1e-6  # Eq. 3: items no vector chose get mean 0


class ResidualBlock(nn.Module):
    """conv3x3 → LeakyReLU(0.02) → conv3x3, plus a 1x1 (or identity) shortcut.

    ``up`` resizes ×2 (bilinear, half-pixel centres) first; ``down`` average
    pools 2×2 after the sum.
    """

    def __init__(self, in_channels: int, out_channels: int, down=False, up=False):
        super().__init__()
        mid = max(in_channels, out_channels)
        self.down, self.up = down, up
        self.conv1 = nn.Conv2d(in_channels, mid, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(mid, out_channels, 3, padding=1, bias=False)
        self.translation = (
            nn.Conv2d(in_channels, out_channels, 1, bias=False)
            if in_channels != out_channels
            else None
        )

    def forward(self, x):
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        y = self.conv2(F.leaky_relu(self.conv1(x), LEAKY_SLOPE))
        out = y + (x if self.translation is None else self.translation(x))
        return F.avg_pool2d(out, 2) if self.down else out


class Memory(nn.Module):
    """K memory items: the Eq. 3 update in every forward pass (kept only in
    training), then the Eq. 5 soft-attentive read with the items held constant."""

    def __init__(self, items: int, channels: int, decay: float):
        super().__init__()
        self.units = nn.Embedding(items, channels)  # N(0, 1) items
        self.units.weight.requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def updated_items(self, vectors):
        items = self.units.weight
        if self.decay == 1.0:
            return items
        scores = F.normalize(vectors, dim=1) @ F.normalize(items, dim=1).T
        choice = F.one_hot(scores.argmax(dim=1), items.shape[0]).to(vectors.dtype)
        means = choice.T @ vectors / (choice.sum(dim=0)[:, None] + COUNT_EPS)
        return self.decay * items + (1.0 - self.decay) * means

    def forward(self, z):
        batch, channels, height, width = z.shape
        vectors = z.permute(0, 2, 3, 1).reshape(-1, channels)
        items = self.updated_items(vectors.detach())
        if self.training:
            self.units.weight.copy_(items)
        scores = F.normalize(vectors, dim=1) @ F.normalize(items, dim=1).T
        read = F.softmax(scores, dim=1) @ items
        return read.reshape(batch, height, width, channels).permute(0, 3, 1, 2)


class CBNFusion(nn.Module):
    """Conditional batch norm of the encoder feature ``f`` by the decoder feature ``g``."""

    def __init__(self, channels: int, keep_probability: float = 0.8):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)  # eps 1e-5, momentum 0.1
        self.gamma = nn.Conv2d(channels, channels, 1, bias=False)
        self.beta = nn.Conv2d(channels, channels, 1, bias=False)
        self.alpha = nn.Conv2d(channels, 1, 1, bias=False)
        self.affine_gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.affine_beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        nn.init.zeros_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)
        self.keep_probability = keep_probability

    def forward(self, f, g):
        f_bar = self.norm(f)
        conditional = f_bar * (1.0 + self.gamma(g)) + self.beta(g)
        unconditional = f_bar * (1.0 + self.affine_gamma) + self.affine_beta
        gate = torch.sigmoid(self.alpha(f_bar))
        if self.training:
            keep = torch.full((f.shape[0], 1, 1, 1), self.keep_probability, device=f.device)
            gate = gate * torch.bernoulli(keep)
        return (1.0 - gate) * conditional + gate * unconditional


class ReleasedNet(nn.Module):
    """The released generator, with the released hyper-parameter names and defaults."""

    def __init__(
        self,
        ngf=16,
        delta=16,
        num_blocks=5,
        num_scales=3,
        num_layers=4,
        kdim=512,
        moving_average_rate=0.999,
    ):
        super().__init__()
        self.multiple = 2**num_scales
        self.head = nn.Conv2d(3, ngf, 3, padding=1, bias=False)
        self.enc, self.dec, self.fuse = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        channels = ngf
        for i in range(num_blocks):
            out = channels + delta
            blocks = [ResidualBlock(channels, out, down=i < num_scales)]
            blocks += [ResidualBlock(out, out) for _ in range(num_layers - 1)]
            self.enc[f"enc{i}"] = nn.Sequential(*blocks)
            channels = out
        self.memory = Memory(kdim, channels, moving_average_rate)
        for i in range(num_blocks):
            out = channels - delta
            blocks = [ResidualBlock(channels, out, up=i >= num_blocks - num_scales)]
            blocks += [ResidualBlock(out, out) for _ in range(num_layers - 1)]
            self.dec[f"dec{i}"] = nn.Sequential(*blocks)
            if i < num_blocks - 1:
                self.fuse[f"fuse{i}"] = CBNFusion(out)
            channels = out
        self.tail = nn.Conv2d(ngf, 3, 3, padding=1, bias=True)

    def forward(self, images):
        height, width = images.shape[-2:]
        pad_h, pad_w = (-height) % self.multiple, (-width) % self.multiple
        x = F.pad(images, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else images
        head = self.head(x)
        features, f = [], head
        for stage in self.enc.values():
            f = stage(f)
            features.append(f)
        g = self.memory(f)
        fusions = list(self.fuse.values())
        for i, stage in enumerate(self.dec.values()):
            g = stage(g)
            if i < len(fusions):
                g = fusions[i](features[len(fusions) - 1 - i], g)
        return torch.tanh(self.tail(head - g))[..., :height, :width]


def load_released_state(net: ReleasedNet, arrays: dict[str, np.ndarray]) -> ReleasedNet:
    """Copy a released ``state_dict`` (key -> NumPy array) into ``net``; every key must fit."""
    state = {key: torch.from_numpy(np.asarray(value)) for key, value in arrays.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise KeyError(f"state_dict does not fit: missing {missing}, unexpected {unexpected}")
    return net


def _trainable(net: nn.Module) -> list[nn.Parameter]:
    return [p for p in net.parameters() if p.requires_grad]


class PretrainStep:
    """Algorithm 1: one Adam step on ``mean |f(rainy) - clean|``."""

    def __init__(self, net: ReleasedNet, learning_rate: float = 2e-4):
        self.net = net.train()
        self.optimizer = torch.optim.Adam(_trainable(net), lr=learning_rate)

    def __call__(self, rainy, clean) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = (self.net(rainy) - clean).abs().mean()
        loss.backward()
        self.optimizer.step()
        return loss.item()


def total_variation(images):
    """docs/method.md §2 L_TV: the mean squared vertical and horizontal differences, averaged."""
    vertical = (images[:, :, 1:] - images[:, :, :-1]).square().mean()
    horizontal = (images[:, :, :, 1:] - images[:, :, :, :-1]).square().mean()
    return (vertical + horizontal) / 2


class SemiStep:
    """Algorithm 2: pseudo-labels from the EMA target, Eq. 9 mixtures, TV, Adam, Eq. 7."""

    def __init__(
        self,
        net: ReleasedNet,
        learning_rate: float = 2e-4,
        loss_weights=(10.0, 1.0, 0.001),
        target_decay: float = 0.999,
    ):
        self.net = net.train()
        self.target = copy.deepcopy(net).eval().requires_grad_(False)
        self.optimizer = torch.optim.Adam(_trainable(net), lr=learning_rate)
        self.loss_weights, self.target_decay = loss_weights, target_decay

    def _mixtures(self, rainy, clean, unlabeled, pseudo, derained):
        """Eq. 9: backgrounds plus shuffled rain layers at a random density, and their targets."""
        rain_l, rain_u = (rainy - derained).detach(), unlabeled - pseudo
        backgrounds = torch.cat([unlabeled, pseudo, rainy, clean])
        rains = torch.cat([rain_l, rain_l, rain_u, rain_u])
        rains = rains[torch.randperm(rains.shape[0])]
        density = torch.empty(rains.shape[0], 1, 1, 1).uniform_(0.5, 1.1)
        mixtures = torch.clamp(backgrounds + density * rains, -1.0, 1.0)
        return mixtures, torch.cat([pseudo, pseudo, clean, clean])

    def __call__(self, rainy, clean, unlabeled) -> float:
        with torch.no_grad():
            pseudo = self.target(unlabeled)
        self.optimizer.zero_grad(set_to_none=True)
        derained = self.net(rainy)
        supervised = (derained - clean).abs().mean()
        mixtures, targets = self._mixtures(rainy, clean, unlabeled, pseudo, derained)
        mixed = self.net(mixtures)
        unsupervised = (mixed - targets).abs().mean()
        weight_su, weight_un, weight_tv = self.loss_weights
        loss = weight_su * supervised + weight_un * unsupervised
        loss = loss + weight_tv * total_variation(mixed)
        loss.backward()
        self.optimizer.step()
        self._update_target()
        return loss.item()

    @torch.no_grad()
    def _update_target(self):
        """Eq. 7 over the trainable weights and the memory items (not the BN statistics)."""
        online = dict(self.net.named_parameters())
        for name, weight in self.target.named_parameters():
            weight.mul_(self.target_decay).add_(online[name], alpha=1.0 - self.target_decay)
