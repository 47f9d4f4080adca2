"""Feature squeezing: flag inputs whose prediction moves when the input is squeezed.

Xu, Evans and Qi, "Feature Squeezing: Detecting Adversarial Examples in Deep Neural Networks" (NDSS 2018),
used against backdoors in the survey's §IV.A ("input reformation"). Constants from the original code
(mzweilin/EvadeML-Zoo): the score of an input is the **maximum over squeezers of the L1 distance** between the
softmax vector of the input and that of its squeezed copy, and the threshold is the clean-score quantile
``sorted(scores)[ceil(N·(1 − fpr)) − 1]`` (:func:`~kerasbd.defenses.base.threshold_at_fpr`; the original used
FPR 5 %). The original squeezer sets per dataset type are :data:`SQUEEZER_SETS`; the squeezers themselves are
:mod:`kerasbd.transforms` (``BitDepth``, ``MedianSmoothing``, ``NonLocalMeans``), named as in EvadeML-Zoo.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from kerasbd.defenses.base import InputDetector, Preset
from kerasbd.defenses.detection.common import SoftmaxPredictor
from kerasbd.errors import ConfigError

__all__ = ["FeatureSqueezing", "SQUEEZER_SETS", "make_squeezer"]

#: Detector configurations of EvadeML-Zoo's ``Reproduce_FeatureSqueezing.md``.
SQUEEZER_SETS: dict[str, tuple[str, ...]] = {
    "mnist": ("bit_depth_1", "median_2_2"),
    "cifar": ("bit_depth_5", "median_2_2", "non_local_means_color_13_3_2"),
    "imagenet": ("bit_depth_5", "median_2_2", "non_local_means_color_11_3_4"),
}

_PATTERNS = {
    "bit_depth": re.compile(r"bit_depth_(\d+)$"),
    "median": re.compile(r"median_(\d+)_(\d+)$"),
    "nlm": re.compile(r"non_local_means_color_(\d+)_(\d+)_(\d+)$"),
}


def make_squeezer(name: str) -> Any:
    """A :mod:`kerasbd.transforms` squeezer from its EvadeML-Zoo name.

    ``bit_depth_<b>``, ``median_<w>_<h>``, ``non_local_means_color_<search>_<patch>_<h>`` (colour images only,
    with the original's RGB-as-BGR quirk).

    Example:
        >>> make_squeezer("median_2_2")  # doctest: +ELLIPSIS
        MedianSmoothing(...)
    """
    from kerasbd.transforms import BitDepth, MedianSmoothing, NonLocalMeans

    if m := _PATTERNS["bit_depth"].match(name):
        return BitDepth(int(m[1]))
    if m := _PATTERNS["median"].match(name):
        return MedianSmoothing((int(m[1]), int(m[2])))
    if m := _PATTERNS["nlm"].match(name):
        return NonLocalMeans(search=int(m[1]), patch=int(m[2]), h=float(m[3]))
    raise ConfigError(
        f"unknown squeezer {name!r}; use bit_depth_<b>, median_<w>_<h> or non_local_means_color_<search>_<patch>_<h>, "
        f"or a set name from {sorted(SQUEEZER_SETS)}."
    )


class FeatureSqueezing(InputDetector):
    """Feature-squeezing detector; score = max over squeezers of ‖softmax(x) − softmax(squeeze(x))‖₁ ∈ [0, 2].

    Args:
        squeezers: a set name (``"mnist"``, ``"cifar"``, ``"imagenet"``), or a list of squeezer names and/or
            :class:`kerasbd.transforms.Transform` objects.
        batch_size: images per forward pass.

    Example:
        >>> import keras, numpy as np
        >>> net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
        >>> x = np.random.default_rng(0).random((40, 8, 8, 1), dtype=np.float32)
        >>> fs = FeatureSqueezing("mnist").fit(net, x, fpr=0.05)
        >>> bool(fs.score(x).min() >= 0)
        True
    """

    name: ClassVar[str] = "squeeze"

    def __init__(self, squeezers: str | Sequence[Any] = "mnist", batch_size: int = 1024) -> None:
        if isinstance(squeezers, str) and squeezers not in SQUEEZER_SETS:
            raise ConfigError(f"unknown squeezer set {squeezers!r}; choose one of {sorted(SQUEEZER_SETS)} or pass a list.")
        if not isinstance(squeezers, str) and len(squeezers) == 0:
            raise ConfigError("squeezers is empty; give at least one squeezer.")
        self.squeezers, self.batch_size = squeezers if isinstance(squeezers, str) else list(squeezers), int(batch_size)
        # Parse now so a bad name fails at construction, not after the model has been loaded.
        names = SQUEEZER_SETS[squeezers] if isinstance(squeezers, str) else squeezers
        self._transforms = [make_squeezer(s) if isinstance(s, str) else s for s in names]

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"original": {}, **{name: {"squeezers": name} for name in SQUEEZER_SETS}}

    @classmethod
    def _auto_preset(cls, images: np.ndarray) -> Preset:
        """EvadeML-Zoo's set for the kind of images: grey digits, small colour images, large colour images."""
        h, w, c = images.shape[1:]
        name = "mnist" if c == 1 else "cifar" if min(h, w) <= 64 else "imagenet"
        return Preset(name, {"squeezers": name}, f"{h}×{w}×{c} images: EvadeML-Zoo's {name} squeezers")

    def scale_warnings(self, images: np.ndarray) -> list[str]:
        if images.shape[-1] == 1 and self.squeezers in ("cifar", "imagenet"):
            return [f"feature-squeezing: the {self.squeezers} squeezers are colour filters; the images are greyscale (use mnist)"]
        return []

    def _fit(self, clean_x: np.ndarray, rng: np.random.Generator) -> None:
        self._predict = SoftmaxPredictor(self.model_, self.batch_size)

    def distances(self, x: np.ndarray) -> np.ndarray:
        """(N, K) L1 distance per input and squeezer (columns in ``squeezers`` order)."""
        from kerasbd.validation import check_images

        if not hasattr(self, "_predict"):
            raise ConfigError("FeatureSqueezing is not fitted; call fit(model, clean_x) first.")
        x = check_images(x, name="inputs", image_shape=self.model_.input_shape[1:])
        # One forward pass over the original and every squeezed copy.
        batch = np.concatenate([x] + [np.asarray(t(x), np.float32) for t in self._transforms])
        p = self._predict(batch).reshape(len(self._transforms) + 1, len(x), -1)
        return np.abs(p[1:] - p[0]).sum(axis=-1).T

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.distances(x).max(axis=1)
