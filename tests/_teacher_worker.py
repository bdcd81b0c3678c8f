"""Teacher training in a child process (TF_CME_CPU_REPLICAS / TF_CONFIG must be set before
TensorFlow starts, and a kill -9 needs a process of its own): tiny FER+ records, end
weights saved to an .npz by a callback.

  python tests/_teacher_worker.py replicas RECORDS RUN OUT.npz
      1 epoch of 2 steps, no dropout and no augmentation (replicas would draw other random
      numbers than one device; everything else is the real configuration)
  python tests/_teacher_worker.py resume RECORDS RUN OUT.npz [KILL_AT_EPOCH]
      2 epochs of 2 steps with dropout and augmentation (the real randomness); with
      KILL_AT_EPOCH the process SIGKILLs itself when that (0-based) epoch begins
"""
from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np


def main(mode, records, run_dir, out, kill_at=None):
    import keras
    from tf_cme.training.teacher import TeacherTrainConfig, train

    class Keep(keras.callbacks.Callback):     # this process's own end weights
        def on_epoch_begin(self, epoch, logs=None):
            if kill_at is not None and epoch == int(kill_at):
                os.kill(os.getpid(), signal.SIGKILL)

        def on_train_end(self, logs=None):
            np.savez(out, **{f"w{i}": w for i, w in enumerate(self.model.get_weights())})

    common = dict(records=records, arch="resnet50-ferplus", width=0.0625, input_size=32,
                  batch_size=16, steps_per_epoch=2, sample_images=0, backbone_lr_mult=1.0)
    if mode == "replicas":
        # a strong weight decay, so that decay counted once per replica would show
        cfg = TeacherTrainConfig(**common, learning_rates=[0.05], epochs_per_rate=[1],
                                 dropout=0.0, augment=False, weight_decay=0.05)
    else:
        cfg = TeacherTrainConfig(**common, learning_rates=[0.05, 0.01],
                                 epochs_per_rate=[1, 1])
    m = train(cfg, run_dir, callbacks=[Keep()])
    print(json.dumps({"ok": True, "epochs_done": m.get("epochs_done")}))


if __name__ == "__main__":
    main(*sys.argv[1:])
