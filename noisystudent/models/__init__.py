"""Classifiers for small images (8x8 to ~96x96): CIFAR-style ResNets and WideResNets.

    model = create_model("resnet20", num_classes=10, in_chans=1, drop_rate=0.5, drop_path_rate=0.2)

Every model maps normalised float images (B, in_chans, H, W), H, W >= 8, to logits
(B, num_classes), exposes `num_classes`, `num_features` and `forward_features(x)` -> (B,
num_features), applies stochastic depth to every residual block and dropout before the
classifier (the student's model noise), and is deterministic in eval mode.
"""

from . import resnet, wide_resnet  # noqa: F401  (registers the models)
from .layers import DropPath, drop_path, drop_path_rates
from .registry import count_params, create_model, list_models, register_model

__all__ = [
    "DropPath",
    "count_params",
    "create_model",
    "drop_path",
    "drop_path_rates",
    "list_models",
    "register_model",
]
