"""Metrics and figures, a leaf of the package (it imports only :mod:`tf_cme.emotions` and
:mod:`tf_cme.utils`): ROC/AUC per emotion (:mod:`.roc`), accuracy, confusion, recall and
softmax (:mod:`.classification`), and the plotting helpers (:mod:`.plots`)."""
