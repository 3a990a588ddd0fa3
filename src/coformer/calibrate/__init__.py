"""DeBo stage 2: progressive calibration of the sub-models against the original model, with Lightning.

Names are imported on first use, so ``coformer.calibrate.config`` (read by ``coformer.params`` in
every stage and CLI command) does not pull in Lightning: about 7 s of start-up on two cores.
"""

from coformer.lazy import lazy_exports

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

__getattr__ = lazy_exports(__name__, EXPORTS)
