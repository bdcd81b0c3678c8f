"""Everything that INVENTS data in the real formats: the demo corpus and its synthetic
faces and voices (:mod:`.corpus`, :mod:`.synth`), fixture files (:mod:`.files`: FER+ CSVs,
VoxCeleb trees, ``.mat`` files, JPEG), tiny untrained runs (:mod:`.runs`) and the
``make demo`` stage runner (:mod:`.stages`).

Only scripts, tests and benchmarks import this package; nothing in the product does, so
invented data can never reach a real loader.
"""
