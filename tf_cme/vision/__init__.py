"""tf_cme.vision: face detection, alignment and cropping (:mod:`.faces`) and video frame
reading (:mod:`.video`).  Importing the package loads nothing heavy."""
