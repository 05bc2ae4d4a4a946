"""Classifiers trained on cached spatial feature maps (the LOFF-TA "student").

LOFF-TA trains a small classifier on ``C x H x W`` feature maps cached from a frozen
foundation model. Two kinds are provided, built by :func:`create_classifier`:

* ``deit_s`` / ``deit_t``: :class:`LoffClassifier`, a DeiT-style ViT (timm
  ``VisionTransformer``, ``patch_size=1``) whose 1x1 patch-embedding conv is the
  *projection* from the ``C`` feature channels to the embedding width, preceded by a
  per-channel *normalisation* of the raw features. ``deit_s`` is DeiT-S (384 wide,
  12 blocks, 6 heads); ``deit_t`` is DeiT-Ti width (192, 3 heads) at depth 4, small
  enough for tests and CPU demos (pass ``depth=12`` for the real DeiT-Ti).
* ``linear``: :class:`LinearProbe`, global average pool -> norm -> ``Linear(C, classes)``.

The *probe path* (``probe=True``, the default, :data:`loffdata.defaults.PROBE`) adds a
:class:`LinearProbe` on the raw features as a second head: in training each head gets its
own cross-entropy (the forward returns both, stacked), so each trains as it would alone,
and the classifier keeps a running mean of each head's training loss
(:meth:`LoffClassifier.track_heads`, called by the recipe's loop). It predicts with the head whose
running training loss is lower (both
summed until a loss is known). The probe, with its own, larger learning rate
(``probe_lr_scale``, see :func:`loffdata.train.utils.param_groups`), carries a short run on
a small cache, where a transformer from scratch is still near chance; the transformer takes
over once it fits the training data better. (Summing the logits under one loss instead lets
the fast probe fit first and starve the transformer of gradient: 93% vs 100% on the demo
cache; summing the two heads' predictions costs a few points wherever one head is far
behind.) The choice uses training data only, no validation split.

Input normalisation (``norm``): ``"batch"`` (default) is ``BatchNorm2d(C)``, i.e. every
feature channel is standardised with running statistics over the dataset. Foundation-model
maps have channels whose scales differ by orders of magnitude (DINOv2's "massive
activation" channels), and a per-token ``LayerNorm`` over channels would let those few
channels set the scale of all the others; per-channel statistics do not. BatchNorm's
statistics are pooled over ``N*H*W`` positions, so they are stable even for small batches.
``"layer"`` (LayerNorm over channels at each position, batch independent) and ``"none"``
are available. Soft labels (mixup/cutmix) are a matter of the loss
(:func:`loffdata.train.utils.loss_fn`), not of the model.

Example::

    model = create_classifier("deit_s", in_chans=768, grid=16, num_classes=1000, probe=False)
    logits = model(features)  # features: (N, 768, H, W), any float dtype, any H, W
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from loffdata import defaults

__all__ = [
    "KINDS",
    "NORMS",
    "ClassifierConfig",
    "LinearProbe",
    "LoffClassifier",
    "create_classifier",
]

#: ViT sizes of the named kinds; ``linear`` has no transformer.
KINDS: dict[str, dict[str, int]] = {
    "deit_s": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "deit_t": {"embed_dim": 192, "depth": 4, "num_heads": 3},
    "linear": {},
}
NORMS = ("batch", "layer", "none")


@dataclass(frozen=True)
class ClassifierConfig:
    """Configuration of a feature classifier.

    Attributes:
        kind: ``deit_s``, ``deit_t`` or ``linear``.
        in_chans: feature channels ``C`` of the cached maps.
        grid: feature grid ``H`` (or ``(H, W)``) the position embedding is created for;
            other grids work too (the embedding is resampled on the fly).
        num_classes: number of output logits.
        embed_dim: ViT width; ``None``: the kind's default.
        depth: number of transformer blocks; ``None``: the kind's default.
        num_heads: attention heads; ``None``: the kind's default.
        mlp_ratio: MLP hidden width over ``embed_dim``.
        norm: input normalisation: ``batch``, ``layer`` or ``none`` (see module doc).
        drop_rate: dropout before the head.
        drop_path_rate: stochastic depth rate (DeiT-S uses 0.1).
        global_pool: ViT pooling: ``token`` (CLS) or ``avg``.
        probe: ViT kinds only: a linear probe on the mean-pooled features as a second
            head with its own loss; predictions come from the head with the lower running
            training loss (both summed until a loss is known; see the module doc).
        probe_lr_scale: the probe path's learning rate over the run's (``param_groups``).
    """

    kind: str = "deit_s"
    in_chans: int = 768
    grid: int | tuple[int, int] = 16
    num_classes: int = 1000
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    norm: str = "batch"
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    global_pool: str = "token"
    probe: bool = defaults.PROBE
    probe_lr_scale: float = defaults.PROBE_LR_SCALE

    def __post_init__(self) -> None:
        _validate(self)

    def vit_size(self) -> dict[str, int]:
        """Return ``embed_dim``, ``depth`` and ``num_heads`` with the overrides applied."""
        size = dict(KINDS[self.kind])
        for name in ("embed_dim", "depth", "num_heads"):
            if getattr(self, name) is not None:
                size[name] = getattr(self, name)
        return size


def _validate(cfg: ClassifierConfig) -> None:
    if cfg.kind not in KINDS:
        raise ValueError(f"unknown classifier kind {cfg.kind!r}; known: {sorted(KINDS)}")
    if cfg.norm not in NORMS:
        raise ValueError(f"unknown norm {cfg.norm!r}; known: {list(NORMS)}")
    grid = (cfg.grid, cfg.grid) if isinstance(cfg.grid, int) else tuple(cfg.grid)
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid must be a positive int or (H, W), got {cfg.grid!r}")
    if cfg.in_chans < 1 or cfg.num_classes < 1:
        raise ValueError(
            f"in_chans and num_classes must be >= 1, got {cfg.in_chans}, {cfg.num_classes}"
        )
    if cfg.probe_lr_scale <= 0:
        raise ValueError(f"probe_lr_scale must be > 0, got {cfg.probe_lr_scale}")
    if cfg.kind != "linear":
        size = cfg.vit_size()
        if min(size.values()) < 1 or size["embed_dim"] % size["num_heads"]:
            raise ValueError(f"embed_dim must be a positive multiple of num_heads, got {size}")


class _FeatureClassifier(nn.Module):
    """Shared input handling: shape check and cast to the parameters' dtype."""

    config: ClassifierConfig

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.config.in_chans:
            raise ValueError(
                f"expected features of shape (N, {self.config.in_chans}, H, W), got "
                f"{tuple(x.shape)}"
            )
        dtype = next(self.parameters()).dtype
        return x if x.dtype == dtype else x.to(dtype)


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an ``NCHW`` map, at every position."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _input_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return _ChannelLayerNorm(channels)
    return nn.Identity()


class LoffClassifier(_FeatureClassifier):
    """DeiT-style ViT on feature maps: norm -> 1x1 projection (patch embed) -> ViT.

    Args:
        config: the classifier configuration (``kind`` must not be ``linear``).
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        if config.kind == "linear":
            raise ValueError("LoffClassifier is the ViT; use LinearProbe for kind='linear'")
        self.config = config
        self.norm = _input_norm(config.norm, config.in_chans)
        self.vit = VisionTransformer(
            img_size=config.grid,
            patch_size=1,
            in_chans=config.in_chans,
            num_classes=config.num_classes,
            mlp_ratio=config.mlp_ratio,
            drop_rate=config.drop_rate,
            drop_path_rate=config.drop_path_rate,
            global_pool=config.global_pool,
            dynamic_img_size=True,
            **config.vit_size(),
        )
        self.probe = (
            LinearProbe(dataclasses.replace(config, kind="linear", probe=False))
            if config.probe
            else None
        )
        if self.probe is not None:  # running training loss of (ViT, probe); NaN: none yet
            self.register_buffer("head_loss", torch.full((2,), float("nan")))

    @property
    def projection(self) -> nn.Conv2d:
        """The 1x1 conv projecting ``in_chans`` feature channels to ``embed_dim``."""
        return self.vit.patch_embed.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)`` for features ``(N, C, H, W)``.

        With the probe path: in training mode the two heads' logits stacked,
        ``(2, N, num_classes)`` (ViT, probe), so that each is trained on its own loss
        (:func:`loffdata.train.objective.recipe_loss` takes the mean of the two); in eval
        mode the logits of the head with the lower running training loss (their sum while
        none is known), chosen on the device, without a host sync.
        """
        x = self._prepare(x)
        logits = self.vit(self.norm(x))
        if self.probe is None:
            return logits
        probe = self.probe(x)
        if self.training:
            return torch.stack((logits, probe))
        vit_loss, probe_loss = self.head_loss.unbind()
        unknown = torch.isnan(vit_loss) | torch.isnan(probe_loss)
        return torch.where(
            unknown, logits + probe, torch.where(vit_loss <= probe_loss, logits, probe)
        )

    @torch.no_grad()
    def track_heads(self, losses: torch.Tensor, *, momentum: float = 0.9) -> None:
        """Adds one step's training losses of (ViT, probe) to their running means."""
        if self.probe is None:
            return
        losses = losses.detach().to(self.head_loss)
        self.head_loss.copy_(
            torch.where(
                torch.isnan(self.head_loss),
                losses,
                momentum * self.head_loss + (1 - momentum) * losses,
            )
        )

    def lr_scales(self) -> dict[str, float]:
        """Name prefix -> learning-rate factor (the probe path's ``probe_lr_scale``)."""
        return {"probe.": self.config.probe_lr_scale} if self.probe is not None else {}

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay (position embedding, CLS token)."""
        return {f"vit.{name}" for name in self.vit.no_weight_decay()}


class LinearProbe(_FeatureClassifier):
    """Linear-probe baseline: global average pool over ``H, W`` -> norm -> ``Linear``.

    Args:
        config: the classifier configuration; ``norm`` picks ``BatchNorm1d`` (``batch``),
            ``LayerNorm`` (``layer``) or nothing (``none``) on the pooled vector.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        c = config.in_chans
        norms = {"batch": nn.BatchNorm1d(c), "layer": nn.LayerNorm(c), "none": nn.Identity()}
        self.norm = norms[config.norm]
        self.drop = nn.Dropout(config.drop_rate)
        self.head = nn.Linear(c, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, num_classes)`` for features ``(N, C, H, W)``."""
        pooled = self._prepare(x).mean(dim=(2, 3))
        return self.head(self.drop(self.norm(pooled)))


def create_classifier(
    kind: str = "deit_s",
    *,
    in_chans: int,
    grid: int | tuple[int, int],
    num_classes: int,
    **overrides: Any,
) -> LoffClassifier | LinearProbe:
    """Build a feature classifier.

    Args:
        kind: ``deit_s``, ``deit_t`` or ``linear``.
        in_chans: feature channels ``C`` of the cached maps.
        grid: feature grid the loader hands out (after pooling/cropping), ``H`` or ``(H, W)``.
        num_classes: number of output logits.
        **overrides: any other :class:`ClassifierConfig` field (``depth``, ``embed_dim``,
            ``num_heads``, ``norm``, ``drop_path_rate`` ...).

    Returns:
        A :class:`LoffClassifier` (ViT kinds) or a :class:`LinearProbe`.

    Raises:
        ValueError: an unknown kind, norm or override, or inconsistent sizes.
    """
    fields = {f.name for f in dataclasses.fields(ClassifierConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown classifier option(s) {unknown}; known: {sorted(fields)}")
    config = ClassifierConfig(
        kind=kind, in_chans=in_chans, grid=grid, num_classes=num_classes, **overrides
    )
    return LinearProbe(config) if kind == "linear" else LoffClassifier(config)
