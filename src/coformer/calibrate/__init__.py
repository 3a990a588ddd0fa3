"""DeBo stage 2: progressive calibration of the sub-models against the original model, with Lightning."""

from coformer.calibrate.config import CalibrationConfig, CalibrationConfigError
from coformer.calibrate.data import CalibrationData
from coformer.calibrate.module import CalibrationModule
from coformer.calibrate.run import CalibrationResult, calibrate
from coformer.calibrate.stages import Stage, plan
from coformer.calibrate.student import build_student, load_student, save_student

__all__ = [
    "CalibrationConfig",
    "CalibrationConfigError",
    "CalibrationData",
    "CalibrationModule",
    "CalibrationResult",
    "Stage",
    "build_student",
    "calibrate",
    "load_student",
    "plan",
    "save_student",
]
