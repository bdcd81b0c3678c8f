"""Procedural face and voice synthesis for the demo corpus (:mod:`tf_cme.demo.corpus`).

``faces``: a vectorised 2-D face renderer with identity variation and 8 expressions.
``voice``: a source-filter speech synthesiser with speaker-dependent pitch and formants,
emotion prosody and background noise, plus simple prosodic measurements used by tests.
"""
