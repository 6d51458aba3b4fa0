"""Offline tools of the hybrid restorer: the damage generator, training, evaluation, calibration and
the ``restorekit`` command line.  Nothing here runs inside a ComfyUI node."""
