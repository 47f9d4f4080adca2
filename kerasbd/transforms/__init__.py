"""Batched, seeded image transforms on canonical images (float32 NHWC RGB in [0, 1]).

Every :class:`Transform` is called as ``transform(batch, rng)`` (rng: None, an int seed or a
``numpy.random.Generator``; same seed -> same output), so it plugs straight into
``kerasbd.training.fit_classifier(transform=...)``, into Keras via :class:`TransformLayer` /
:func:`with_preprocessing`, and into ``tf.data`` via :func:`tf_map`.

* GYM / DeepSweep: :class:`GYMIntensive`, :class:`GYMLightweight` and their components.
* SAT: :class:`SAT`. Baselines: :class:`ShrinkPad`, :class:`Flip`.
* Feature squeezing: :class:`BitDepth`, :class:`MedianSmoothing`, :class:`NonLocalMeans`.
* NNoculation: :class:`NNoculationNoise`. STRIP: :func:`superimpose`, :func:`strip_superimpose`.

Example:
    >>> import numpy as np
    >>> from kerasbd.transforms import gym_lightweight
    >>> x = np.random.default_rng(0).random((8, 32, 32, 3), dtype=np.float32)
    >>> np.array_equal(gym_lightweight()(x, rng=1), gym_lightweight()(x, rng=1))
    True
"""

from kerasbd.transforms.base import TRANSFORMS, Compose, RngLike, Transform, as_generator, deserialize, serialize
from kerasbd.transforms.baselines import Flip, ShrinkPad
from kerasbd.transforms.gym import (
    Downscale,
    Gamma,
    GYMIntensive,
    GYMLightweight,
    MedianBlur,
    MultiplicativeNoise,
    Multiply,
    OpticalDistortion,
    RandomShrinkPad,
    Resize,
    ScaledMedian,
    distortion_maps,
    gym_intensive,
    gym_lightweight,
)
from kerasbd.transforms.keras_layer import TransformLayer, tf_map, with_preprocessing
from kerasbd.transforms.noise import NNoculationNoise
from kerasbd.transforms.sat import SAT
from kerasbd.transforms.squeeze import BitDepth, MedianSmoothing, NonLocalMeans
from kerasbd.transforms.strip import strip_superimpose, superimpose

__all__ = [
    "TRANSFORMS",
    "RngLike",
    "Transform",
    "Compose",
    "as_generator",
    "serialize",
    "deserialize",
    "OpticalDistortion",
    "Gamma",
    "Multiply",
    "MultiplicativeNoise",
    "MedianBlur",
    "Downscale",
    "Resize",
    "ScaledMedian",
    "RandomShrinkPad",
    "distortion_maps",
    "GYMIntensive",
    "GYMLightweight",
    "gym_intensive",
    "gym_lightweight",
    "SAT",
    "ShrinkPad",
    "Flip",
    "BitDepth",
    "MedianSmoothing",
    "NonLocalMeans",
    "NNoculationNoise",
    "superimpose",
    "strip_superimpose",
    "TransformLayer",
    "with_preprocessing",
    "tf_map",
]
