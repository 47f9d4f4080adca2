"""kerasbd: find and remove backdoors (trojans, BadNets) in Keras image classifiers.

Conventions (see docs/ARCHITECTURE.md): images are canonical float32 NHWC RGB batches in [0, 1]; a kerasbd
model maps such batches to logits. Subpackages: ``models`` (safe loading), ``zoo``, ``data``, ``attacks``,
``metrics``, ``transforms``, ``training``, ``defenses``, ``callbacks``.
"""

__version__ = "0.1.0"
