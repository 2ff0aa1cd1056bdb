"""Robustness suite: ImageNet-C style corruptions, ImageNet-P style flip rates and FGSM accuracy.

    from noisystudent.robustness import CORRUPTIONS, corrupt, robustness_report
    foggy = corrupt(images, "fog", severity=3, seed=0)
    report = robustness_report(model, images, labels, mean=mean, std=std, device="cpu")

See docs/ROBUSTNESS.md for the corruption parameters and the metrics' definitions.
"""

from noisystudent.robustness.corruptions import (
    CORRUPTIONS,
    DETERMINISTIC,
    SEVERITIES,
    SEVERITY_PARAMS,
    corrupt,
)
from noisystudent.robustness.metrics import (
    corruption_errors,
    fgsm_accuracy,
    flip_counts,
    flip_rate,
    relative_mce,
    robustness_report,
)

__all__ = [
    "CORRUPTIONS",
    "DETERMINISTIC",
    "SEVERITIES",
    "SEVERITY_PARAMS",
    "corrupt",
    "corruption_errors",
    "fgsm_accuracy",
    "flip_counts",
    "flip_rate",
    "relative_mce",
    "robustness_report",
]
