"""Shared building blocks of generator models and adversarial training loops.

Here now: the layers image-to-image generators are made of (:func:`instance_norm`, :class:`ReflectionPadding2D`, :class:`FixedMask`),
CycleGAN's history of generated images (:class:`ImagePool`), the hold-then-decay learning-rate schedule
(:class:`LinearDecay`) and the two-player ``keras.Model`` base (:class:`AdversarialModel`) whose subclasses only
write ``train_step``. The layers and the schedule are registered under package ``"kerasbd"``, so a ``.keras``
file using them loads after ``import kerasbd.generators``.

:func:`resnet_generator` is Johnson et al.'s image-to-image ResNet generator, optionally several independent ones
computed as one model (GangSweep's per-label perturbation generators; the CycleGAN's generators are single ones);
:class:`PerturbationTrainer` trains such a stack towards one target label per copy against a frozen classifier;
:func:`conditional_generator` is DeepInspect's label-conditioned ``G(z, t)``, trained by
:class:`ConditionalTriggerTrainer` (with the optional GAN term's :func:`patch_discriminator`).

DHBE's data-free distillation: :func:`sample_generator`, :func:`patch_generator` with :func:`random_pad` (or
:func:`place_patches`, one position per image), and :class:`DHBETrainer`.

NNoculation's post-deployment CycleGAN, which learns the attacker's trigger from quarantined inputs:
:func:`cyclegan_generator`, :func:`patchgan_discriminator`, :class:`CycleGAN` and :class:`CycleGANTranslator`.
"""

from kerasbd.generators.adversarial import AdversarialModel, apply_mean_gradient
from kerasbd.generators.conditional import ConditionalTriggerTrainer, conditional_generator, patch_discriminator
from kerasbd.generators.cyclegan import CycleGAN, CycleGANTranslator, cyclegan_generator, patchgan_discriminator
from kerasbd.generators.data_free import DHBETrainer, patch_generator, place_patches, random_pad, sample_generator
from kerasbd.generators.layers import FixedMask, GroupedConv2D, ReflectionPadding2D, instance_norm
from kerasbd.generators.perturbation import PerturbationTrainer
from kerasbd.generators.pool import ImagePool
from kerasbd.generators.resnet import resnet_generator
from kerasbd.generators.schedules import LinearDecay

__all__ = ["AdversarialModel", "ConditionalTriggerTrainer", "CycleGAN", "CycleGANTranslator", "DHBETrainer", "FixedMask", "GroupedConv2D",
           "ImagePool", "LinearDecay", "PerturbationTrainer", "ReflectionPadding2D", "apply_mean_gradient", "conditional_generator",
           "cyclegan_generator", "instance_norm", "patch_discriminator", "patch_generator", "patchgan_discriminator", "place_patches",
           "random_pad", "resnet_generator", "sample_generator"]
