"""``kerasbd scan``: one calibrated verdict per model, for one model or many on Ray.

:class:`Scanner` runs the inspectors that fit the data and combines their statistics (:func:`features_of`) through a
:class:`Calibration` fitted on a population of models into P(backdoored), the suspected target(s) and a repair
(:class:`ScanResult`). :func:`scan_many` scans many models, one Ray task each, resumable.
"""

from kerasbd.scan.calibration import FEATURES, Calibration, features_of, shipped_calibration, suspect_label
from kerasbd.scan.many import model_name, scan_many, scan_one, start_ray
from kerasbd.scan.scanner import BUDGETS, CLEAN_LIMIT, THRESHOLD, Scanner, ScanResult

__all__ = ["BUDGETS", "CLEAN_LIMIT", "FEATURES", "THRESHOLD", "Calibration", "ScanResult", "Scanner", "features_of", "model_name", "scan_many",
           "scan_one", "shipped_calibration", "start_ray", "suspect_label"]
