"""DeBo stage 2: progressive calibration of the sub-models against the original model, with Lightning.

Names are imported on first use, so ``coformer.calibrate.config`` (read by ``coformer.params`` in
every stage and CLI command) does not pull in Lightning: about 7 s of start-up on two cores.
"""

import importlib

EXPORTS = {
    "CalibrationConfig": "coformer.calibrate.config",
    "CalibrationConfigError": "coformer.calibrate.config",
    "CalibrationData": "coformer.calibrate.data",
    "CalibrationModule": "coformer.calibrate.module",
    "CalibrationResult": "coformer.calibrate.run",
    "Stage": "coformer.calibrate.stages",
    "build_student": "coformer.calibrate.student",
    "calibrate": "coformer.calibrate.run",
    "load_student": "coformer.calibrate.student",
    "plan": "coformer.calibrate.stages",
    "save_student": "coformer.calibrate.student",
}
__all__ = sorted(EXPORTS)


def __getattr__(name: str):
    if name not in EXPORTS:
        raise AttributeError(f"module 'coformer.calibrate' has no attribute {name!r}")
    return getattr(importlib.import_module(EXPORTS[name]), name)
