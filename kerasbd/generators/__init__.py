"""Shared building blocks of generator models and adversarial training loops.

Here now: the layers image-to-image generators are made of (:func:`instance_norm`, :class:`ReflectionPadding2D`),
CycleGAN's history of generated images (:class:`ImagePool`), the hold-then-decay learning-rate schedule
(:class:`LinearDecay`) and the two-player ``keras.Model`` base (:class:`AdversarialModel`) whose subclasses only
write ``train_step``. The layers and the schedule are registered under package ``"kerasbd"``, so a ``.keras``
file using them loads after ``import kerasbd.generators``.

Built on these later: GangSweep's per-label GAN perturbation generators, DeepInspect's conditional generator,
DHBE's data-free adversarial distillation, and the CycleGAN that learns the attacker's trigger for NNoculation.
"""

from kerasbd.generators.adversarial import AdversarialModel
from kerasbd.generators.layers import ReflectionPadding2D, instance_norm
from kerasbd.generators.pool import ImagePool
from kerasbd.generators.schedules import LinearDecay

__all__ = ["AdversarialModel", "ImagePool", "LinearDecay", "ReflectionPadding2D", "instance_norm"]
