"""Patching: fine-tune on clean images plus copies stamped with reversed triggers, under their correct labels.

GangSweep (§4.3, §5.2) and DeepInspect repair a flagged model this way: the generators that found each flagged
label's trigger stamp it on clean (or substitute) images, and fine-tuning on those with their true labels
unlearns the shortcut. GangSweep fine-tunes 3 epochs on 10 % of its 10,000-image validation sets plus 10 %
"adversarial" data, and on the whole set with its stamped copies where that set is small (1,000-2,622 images);
a defender's set of ~1,000 images is that case, so every image and one stamped copy of each are used by default
(``clean_fraction`` / ``stamped_fraction`` 0.1 give the large-set recipe). The optimiser is not given: Adam at
1e-3, batch 32, as :class:`~kerasbd.defenses.Unlearning` (kerasbd's choice).
"""

from __future__ import annotations

from typing import Any, Protocol

import keras
import numpy as np

from kerasbd.config import Configurable
from kerasbd.errors import ConfigError
from kerasbd.models.surgery import copy_model

__all__ = ["MaskSource", "Patching"]


class MaskSource(Protocol):
    """Whatever gives a label's reversed trigger for images (GangSweep's or DeepInspect's generators): one additive
    perturbation per image, in image units."""

    def perturb(self, x: np.ndarray, label: int) -> np.ndarray: ...


class Patching(Configurable):
    """Fine-tune a copy of the model on clean images and copies stamped with generated masks, correctly labelled.

    Args:
        clean_fraction: share of the clean images kept as they are (1.0; the paper's large sets: 0.1).
        stamped_fraction: share of the clean images that get a stamped copy (1.0; large sets: 0.1), split in
            turn among the flagged labels.
        mask_scale: the stamped copies are ``clip(x + mask_scale · mask, 0, 1)`` (1 = the masks as generated).
        epochs, batch_size, optimizer, learning_rate: the fine-tuning (3 epochs as the paper; Adam 1e-3, 32).

    Example:
        >>> Patching(stamped_fraction=0.1).get_config()["epochs"]
        3
    """

    def __init__(self, clean_fraction: float = 1.0, stamped_fraction: float = 1.0, mask_scale: float = 1.0, epochs: int = 3,
                 batch_size: int = 32, optimizer: str = "adam", learning_rate: float | None = 1e-3) -> None:
        for name, value in (("clean_fraction", clean_fraction), ("stamped_fraction", stamped_fraction)):
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {value}.")
        if mask_scale <= 0:
            raise ConfigError(f"mask_scale must be positive, got {mask_scale}.")
        if epochs < 1 or batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be positive, got {epochs} and {batch_size}.")
        self.clean_fraction, self.stamped_fraction, self.mask_scale = float(clean_fraction), float(stamped_fraction), float(mask_scale)
        self.epochs, self.batch_size, self.optimizer, self.learning_rate = int(epochs), int(batch_size), optimizer, learning_rate

    def apply(self, model: keras.Model, clean: tuple[np.ndarray, np.ndarray], masks: MaskSource, labels: list[int], *,
              rng: np.random.Generator, seed: int, strategy: Any = None) -> keras.Model:
        """The patched copy of ``model`` (``model`` itself is not modified)."""
        from kerasbd.training import fit_classifier

        if not labels:
            raise ConfigError("no flagged label to patch.")
        x, y = clean
        n = len(x)
        keep = rng.choice(n, size=max(1, round(self.clean_fraction * n)), replace=False)
        stamp = rng.choice(n, size=max(1, round(self.stamped_fraction * n)), replace=False)
        which = np.arange(len(stamp)) % len(labels)
        stamped = [self._stamp(masks, x[stamp[which == j]], label) for j, label in enumerate(labels)]
        x_patch = np.concatenate([x[keep], *stamped])
        y_patch = np.concatenate([y[keep], *[y[stamp[which == j]] for j in range(len(labels))]])
        patched = copy_model(model)
        fit_classifier(patched, x_patch, y_patch, epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
                       learning_rate=self.learning_rate, seed=seed, strategy=strategy)
        return patched

    def _stamp(self, masks: MaskSource, x: np.ndarray, label: int) -> np.ndarray:
        return np.clip(x + self.mask_scale * masks.perturb(x, label), 0.0, 1.0).astype(np.float32)
