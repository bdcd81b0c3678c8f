"""TensorBoard tag names shared by both trainers (issue: the same thing, the same tag).

Scalars are written per epoch (teacher) or mini-epoch (student) into ``RUN/tensorboard/train``
and ``RUN/tensorboard/validation`` (Keras's own layout), so TensorBoard overlays the two
curves of one tag. Class-wise figures use the emotion names of ``tf_cme.emotions``.
"""
LOSS = "epoch_loss"
LEARNING_RATE = "epoch_learning_rate"
ACCURACY = "epoch_accuracy"
MEAN_RECALL = "epoch_mean_recall"
RECALL = "epoch_recall/{emotion}"          # one per emotion
INPUTS = "inputs"                           # images as the model sees them
TRAIN_DIR = "train"
VALIDATION_DIR = "validation"


def recall(emotion: str) -> str:
    return RECALL.format(emotion=emotion)
