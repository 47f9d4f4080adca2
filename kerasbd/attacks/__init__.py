"""Backdoor attacks: triggers that stamp canonical batches, target mappings, JSON specs, poisoning, BadNet training.

Triggers (spec ``type`` in brackets): :class:`Patch` (``patch``), :class:`PixelPattern` (``pixels``),
:class:`ImageTrigger` (``image``), :class:`Blend` (``blend``), :class:`NoisePattern` (``noise``),
:class:`Filter` (``filter``), :class:`InvisibleL0` (``invisible-l0``), :class:`InvisibleL2` (``invisible-l2``),
:class:`Combination` (``combination``), :class:`Amplified` (``amplified``), :class:`AdditivePerturbation`
(``perturbation``: a generator-reversed trigger), :class:`MaskedPattern`
(``masked-pattern``: a reversed trigger). Targets: :class:`AllToOne`,
:class:`AllToAll`. A :class:`Backdoor` pairs a trigger with a target; a model may carry several.

Example:
    >>> import numpy as np
    >>> from kerasbd.attacks import from_spec
    >>> [bd] = from_spec({"name": "nc", "target": {"type": "all-to-one", "label": 7},
    ...                   "trigger": {"type": "patch", "size": [4, 4], "position": "bottom-right", "margin": 1}})
    >>> xt, yt = bd.poison(np.zeros((1, 28, 28, 1), "float32"), np.array([3]))
    >>> float(xt[0, 23:27, 23:27].min()), yt.tolist()
    (1.0, [7])
"""

from kerasbd.attacks.base import TRIGGERS, Trigger, trigger_from_spec
from kerasbd.attacks.combination import Combination
from kerasbd.attacks.global_triggers import Blend, Filter, InvisibleL0, InvisibleL2, NoisePattern, gotham
from kerasbd.attacks.local import ANCHORS, Amplified, ImageTrigger, LocalTrigger, Patch, PixelPattern
from kerasbd.attacks.masked import AdditivePerturbation, MaskedPattern
from kerasbd.attacks.poison import PoisonedData, poison_dataset, train_badnet
from kerasbd.attacks.spec import AttackSpec, Backdoor, from_spec, load_spec, parse_spec, save_spec, to_spec
from kerasbd.attacks.targets import AllToAll, AllToOne, TargetMap, target_from_spec

__all__ = [
    "ANCHORS",
    "TRIGGERS",
    "AllToAll",
    "AllToOne",
    "Amplified",
    "AttackSpec",
    "Backdoor",
    "Blend",
    "Combination",
    "Filter",
    "ImageTrigger",
    "InvisibleL0",
    "InvisibleL2",
    "MaskedPattern",
    "AdditivePerturbation",
    "LocalTrigger",
    "NoisePattern",
    "Patch",
    "PixelPattern",
    "PoisonedData",
    "TargetMap",
    "Trigger",
    "from_spec",
    "gotham",
    "load_spec",
    "parse_spec",
    "poison_dataset",
    "save_spec",
    "target_from_spec",
    "to_spec",
    "train_badnet",
    "trigger_from_spec",
]
