"""Metrics: backdoor effect (clean accuracy, ASR, robust accuracy, TCP), detector quality (ROC AUC, TPR at an
FPR, FAR/FRR), DER and Neural Cleanse's MAD anomaly index."""

from kerasbd.metrics.anomaly import mad_anomaly_index, mad_null_flag_rate
from kerasbd.metrics.backdoor import activation_difference, amplified, der, evaluate_backdoor, predict_logits, softmax
from kerasbd.metrics.detection import far_frr, roc_auc, roc_curve, threshold_at_fpr, tpr_at_fpr

__all__ = [
    "activation_difference",
    "amplified",
    "der",
    "evaluate_backdoor",
    "far_frr",
    "mad_anomaly_index",
    "mad_null_flag_rate",
    "predict_logits",
    "roc_auc",
    "roc_curve",
    "softmax",
    "threshold_at_fpr",
    "tpr_at_fpr",
]
