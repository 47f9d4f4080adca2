"""NNoculation post-deployment treatment (Veldanda et al., §3.3, §4.2.2): learn the trigger from quarantined inputs.

Once the deployed :class:`~kerasbd.serving.Ensemble` has quarantined ``quarantine_size`` inputs (paper: N = 200),
a CycleGAN (:class:`~kerasbd.generators.CycleGANTranslator`) is trained from ``clean_size`` clean validation
images (paper: 500) to the quarantined ones; its generator then adds the attacker's trigger to clean images. The
translated clean images, labelled with their *clean* labels, are the treatment set, and **both** the BadNet and
the GoodNet are fine-tuned on treatment + clean validation images (the paper's §3.3; the original
``post_deploy.py`` retrains only the GoodNet: ``retrain="goodnet"``, the ``"code"`` preset). The repaired pair is
redeployed as a new ensemble version; triggers that appear later are quarantined by it and treated by the next
round (the adaptive online attacker of the paper's Table 8).

Fine-tuning mirrors ``post_deploy.py``: Adadelta(learning_rate=1), sparse cross-entropy, 10 epochs, batch 1283,
shuffled. Like the pre-deployment defense, the ``"auto"`` preset keeps the original's ~18 steps per epoch on the
defender's data instead of its batch (1,000 MNIST images with a batch of 1283 would be one step an epoch) and
trains the CycleGAN on the ``short`` CPU schedule for images of at most 64×64 pixels.

Deliberate differences from ``post_deploy.py`` (bugs not reproduced, see ORIGINAL_IMPLEMENTATIONS.md §2.4): the
translated images are in the same [0, 1] range as the clean ones (the original forgot to divide its synthetic
PNGs by 255), and the BadNet is retrained too, as the paper says.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import keras
import numpy as np

from kerasbd.defenses.base import Method, Preset
from kerasbd.defenses.repair.nnoculation import ORIGINAL_STEPS_PER_EPOCH
from kerasbd.errors import ConfigError
from kerasbd.generators.cyclegan import CycleGANTranslator
from kerasbd.models.surgery import copy_model

__all__ = ["NNoculationTreatment", "TreatmentResult"]

#: The CPU schedule of the CycleGAN (``"short"`` preset, ``"auto"`` for small images): 16 first filters, 3 residual
#: blocks, batch 4, 5 epochs, XLA on (2.0× faster per step at 28×28, 1.4× at 55×47; slower for the paper's 55×47
#: network: benchmarks/results/nnoculation_post.md). With it one round takes the served ASR of the zoo's MNIST BadNets
#: to 0.5-2.7 % (3 seeds, results/nnoculation_post.md).
SHORT_CYCLEGAN = {"cyclegan__filters": 16, "cyclegan__blocks": 3, "cyclegan__batch_size": 4, "cyclegan__epochs": 5,
                  "cyclegan__jit_compile": True}


@dataclass
class TreatmentResult:
    """One treatment round: the repaired networks as a new ensemble, the treatment images and what it took."""

    ensemble: Any
    badnet: keras.Model
    goodnet: keras.Model
    clean_images: np.ndarray
    treatment_images: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.ensemble.version, **self.details}


class NNoculationTreatment(Method):
    """Train a CycleGAN clean → quarantined, translate clean images, fine-tune both networks on them.

    Args:
        quarantine_size: quarantined inputs a round waits for (paper N = 200); fewer is refused.
        clean_size: clean validation images of the CycleGAN's clean domain and of the treatment set (paper 500);
            all of them when the defender has fewer.
        cyclegan: the :class:`~kerasbd.generators.CycleGANTranslator` (defaults: the paper's CycleGAN).
        epochs, batch_size, optimizer, learning_rate: the fine-tuning (original: 10, 1283, Adadelta, 1.0).
        retrain: ``"both"`` (paper) or ``"goodnet"`` (the original code).

    Example:
        >>> from kerasbd.serving import Ensemble
        >>> result = NNoculationTreatment.preset("auto", x_clean).treat(Ensemble(badnet, goodnet), quarantined,
        ...                                                            (x_clean, y_clean), seed=0)  # doctest: +SKIP
        >>> result.ensemble.version, result.details["seconds"]  # doctest: +SKIP
    """

    name: ClassVar[str] = "nnoculation-post"
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "original": {},
        "code": {"retrain": "goodnet", "cyclegan__filters": 32},
        "short": dict(SHORT_CYCLEGAN),
    }

    def __init__(self, quarantine_size: int = 200, clean_size: int = 500, cyclegan: CycleGANTranslator | None = None,
                 epochs: int = 10, batch_size: int = 1283, optimizer: str = "adadelta", learning_rate: float = 1.0,
                 retrain: str = "both") -> None:
        if quarantine_size < 1 or clean_size < 1 or epochs < 1 or batch_size < 1:
            raise ConfigError(f"quarantine_size, clean_size, epochs and batch_size must be positive, got {quarantine_size}, "
                              f"{clean_size}, {epochs}, {batch_size}.")
        if retrain not in ("both", "goodnet"):
            raise ConfigError(f"retrain must be 'both' (the paper) or 'goodnet' (the original code), got {retrain!r}.")
        if learning_rate <= 0:
            raise ConfigError(f"learning_rate must be positive, got {learning_rate}.")
        self.quarantine_size, self.clean_size = int(quarantine_size), int(clean_size)
        self.cyclegan = cyclegan if cyclegan is not None else CycleGANTranslator()
        self.epochs, self.batch_size, self.optimizer, self.learning_rate = int(epochs), int(batch_size), optimizer, float(learning_rate)
        self.retrain = retrain

    @classmethod
    def _auto_preset(cls, images: np.ndarray) -> Preset:
        default = cls()
        n = 2 * min(len(images), default.clean_size)  # treatment copies + the clean images
        batch = int(min(default.batch_size, max(1, round(n / ORIGINAL_STEPS_PER_EPOCH))))
        params: dict[str, Any] = {"batch_size": batch} if batch != default.batch_size else {}
        reason = f"fine-tuning keeps the original's ~{ORIGINAL_STEPS_PER_EPOCH} steps per epoch on {n} images (batch {batch})"
        h, w = (int(s) for s in np.asarray(images).shape[1:3])
        if h * w <= 64 * 64:
            params.update(SHORT_CYCLEGAN)
            reason += (f"; the CycleGAN on the short CPU schedule for {h}×{w} images (16 filters, 3 blocks, 5 epochs; the paper's "
                       "200 epochs of a 64-filter, 9-block CycleGAN took 5 h on a GPU: --preset original)")
        return Preset("auto", params, reason)

    def scale_warnings(self, images: np.ndarray) -> list[str]:
        n = 2 * min(len(images), self.clean_size)
        steps = math.ceil(n / self.batch_size)
        if steps < ORIGINAL_STEPS_PER_EPOCH / 3:
            return [f"nnoculation-post: batch_size {self.batch_size} gives {steps} fine-tuning step(s) per epoch on {n} images "
                    f"(the original took ~{ORIGINAL_STEPS_PER_EPOCH}); --preset auto scales the batch to the data"]
        return []

    def treat(self, ensemble: Any, quarantined: np.ndarray, clean: tuple[np.ndarray, np.ndarray], *, seed: int = 0,
              store: Any = None, strategy: Any = None, verbose: int = 0, version: str | None = None) -> TreatmentResult:
        """One round: returns the repaired ensemble (``version``: its name; default the weights' digest).

        Args:
            ensemble: the deployed :class:`~kerasbd.serving.Ensemble`.
            quarantined: the quarantined inputs of this round (at least ``quarantine_size``; all are used).
            clean: the defender's clean validation images and labels.
            seed: the clean-image draw, the CycleGAN and the fine-tuning.
            store: a :class:`~kerasbd.resume.ResumeStore` (CycleGAN epochs checkpointed, finished stages kept).
            strategy: a ``tf.distribute`` strategy or its name.
        """
        from kerasbd.serving import Ensemble
        from kerasbd.training import fit_classifier
        from kerasbd.validation import check_dataset, check_images

        shape = ensemble.input_shape
        q = check_images(quarantined, name="quarantined inputs", image_shape=shape)
        if len(q) < self.quarantine_size:
            raise ConfigError(f"{len(q)} quarantined inputs, the treatment waits for {self.quarantine_size} (quarantine_size): "
                              "keep serving, or lower quarantine_size.")
        x, y = check_dataset(*clean, num_classes=ensemble.num_classes, image_shape=shape, name="clean data")
        settings = self._settings(x)  # issues the scale warnings
        start = time.perf_counter()
        rng = np.random.default_rng([seed, 0])
        pick = np.sort(rng.permutation(len(x))[: self.clean_size])
        xa, ya = x[pick], y[pick]
        translator = self.cyclegan.fit(xa, q, seed=seed, store=store, strategy=strategy, verbose=verbose)
        treated = translator.translate(xa)
        cyclegan_seconds = time.perf_counter() - start
        train_x, train_y = np.concatenate([treated, xa]), np.concatenate([ya, ya])
        nets = {"badnet": copy_model(ensemble.badnet), "goodnet": copy_model(ensemble.goodnet)}
        for k, (role, net) in enumerate(nets.items()):
            if role == "badnet" and self.retrain == "goodnet":
                continue
            key = f"treated_{role}"
            if store is not None and store.has(key):
                store.load_weights(key, net)
                continue
            fit_classifier(net, train_x, train_y, epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer,
                           learning_rate=self.learning_rate, seed=seed + 1 + k, strategy=strategy, verbose=verbose)
            if store is not None:
                store.save_weights(key, net)
        repaired = Ensemble(nets["badnet"], nets["goodnet"], version=version, batch_size=ensemble.batch_size)
        details = {
            "note": f"CycleGAN trained on {len(xa)} clean and {len(q)} quarantined inputs; "
                    f"{'both networks' if self.retrain == 'both' else 'the GoodNet'} fine-tuned on {len(treated)} translated clean "
                    f"images with their clean labels plus the {len(xa)} clean ones",
            "previous_version": ensemble.version,
            "quarantined_used": len(q),
            "clean_used": len(xa),
            "retrained": ["badnet", "goodnet"] if self.retrain == "both" else ["goodnet"],
            "cyclegan": {"history": translator.history_, "seconds_per_epoch": translator.seconds_per_epoch_,
                         "seconds": cyclegan_seconds, **translator.get_config()},
            "seconds": time.perf_counter() - start,
            "seed": seed,
            **settings,
        }
        return TreatmentResult(repaired, nets["badnet"], nets["goodnet"], xa, treated, details)
