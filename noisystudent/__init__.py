"""noisystudent: Noisy Student Training (Xie, Luong, Hovy, Le, CVPR 2020) on your own images.

    from noisystudent import Config, run
    result = run(Config.from_yaml("configs/fashion_mnist.yaml"))
    print(result.table())
"""

from noisystudent.checkpoint import load_model
from noisystudent.config import Config
from noisystudent.errors import UserError
from noisystudent.models import create_model, list_models
from noisystudent.pipeline import RunResult, run
from noisystudent.predict import predict

__all__ = ["Config", "RunResult", "UserError", "create_model", "list_models", "load_model", "predict", "run"]
