"""The audio constants of the protocol, defined here only (protocol §2.2, §3.1).

A leaf module (no imports), so record schemas, pipelines, the front end, prediction and
serving all read the same numbers without pulling in Keras or TensorFlow.
"""
#: Every waveform the student sees: 16 kHz mono.
SAMPLE_RATE = 16000
#: The training crop: 64,384 samples = 4.024 s -> 400 spectrogram frames (protocol §3.1).
TRAIN_CROP_SAMPLES = 64384
TRAIN_CROP_SECONDS = TRAIN_CROP_SAMPLES / SAMPLE_RATE
#: Training crops are drawn from the first 19.9 s of a track (protocol §3.1).
MAX_TRAIN_SECONDS = 19.9
MAX_TRAIN_SAMPLES = 318400
assert MAX_TRAIN_SAMPLES == round(MAX_TRAIN_SECONDS * SAMPLE_RATE)
#: The shortest clip the student scores: 100 spectrogram frames (the smallest bucket,
#: protocol §3.2) = 400 + 99 * 160 samples, 1.015 s; shorter clips are refused by predict
#: and by the exported signatures alike.
MIN_SERVING_FRAMES = 100
MIN_SERVING_SAMPLES = 400 + (MIN_SERVING_FRAMES - 1) * 160
