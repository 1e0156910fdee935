"""Hypothesis strategies for real files of every kind careshare handles, for plugin authors' tests too.

Each submodule builds files with the real library of its format: ``pdf`` (pikepdf), ``images``
(Pillow), ``dicom`` (pydicom), ``video`` (PyAV).
"""
