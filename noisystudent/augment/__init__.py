"""Batched, per-sample image augmentation on (B, C, H, W) uint8 tensors (any device).

- `RandAugment`: the student's input noise (RandAugment, timm-like specs such as "rand-n2-m9").
- `gaussian_pixel_noise`: per-sample Gaussian noise on every pixel (an input noise besides RandAugment).
- `mixup`: per-sample mixup of model inputs and their targets (input noise that needs the targets,
  so `noisystudent.train` applies it after the image augmentation).
- `random_crop_flip`: the weak augmentation used by every training run.
- `OPS`: the RandAugment op names, in draw order; see `noisystudent.augment.ops` for the
  magnitude table.
"""

from noisystudent.augment.basic import random_crop_flip
from noisystudent.augment.mix import mixup
from noisystudent.augment.ops import OPS
from noisystudent.augment.pixel import gaussian_pixel_noise
from noisystudent.augment.randaugment import RandAugment, parse_randaugment_spec

__all__ = ["OPS", "RandAugment", "gaussian_pixel_noise", "mixup", "parse_randaugment_spec", "random_crop_flip"]
