"""Epoch checkpoints of both trainers: a ``tf.train.Checkpoint`` written as
``CKDIR/ckpt-<n>`` (n: the epoch or mini-epoch done), then ``CKDIR/state.json`` naming it
(written atomically, so a run killed between the two resumes from the previous one), then
all but the last two and the ``keep`` ones pruned."""
from __future__ import annotations

import json
from pathlib import Path

from ..utils import write_json

STATE = "state.json"
PREFIX = "ckpt-{n}"


def read_state(ckdir) -> dict | None:
    """The state of the last checkpoint in ``ckdir`` (with its ``prefix``), or None."""
    path = Path(ckdir) / STATE
    if not path.exists():
        return None
    with open(path) as f:
        return json.load(f)


def restore(ckpt, ckdir, state: dict):
    """Read the checkpoint ``state`` names into ``ckpt``'s objects (all of them must match)."""
    status = ckpt.read(str(Path(ckdir) / state["prefix"]))
    status.assert_existing_objects_matched()
    return status


def save(ckpt, ckdir, n: int, state: dict, *, keep=(), chief: bool = True) -> str:
    """Write ``ckpt`` as ``ckdir/ckpt-<n>``; on the chief, then ``state`` (plus ``prefix``)
    as ``ckdir/state.json`` and prune older checkpoints but the
    previous one and those of ``keep``. Returns the prefix."""
    ckdir = Path(ckdir)
    prefix = PREFIX.format(n=int(n))
    ckpt.write(str(ckdir / prefix))
    if chief:
        write_json(ckdir / STATE, {**state, "prefix": prefix})
        keep = {int(k) for k in keep}
        for old in ckdir.glob("ckpt-*"):
            k = old.name.split(".")[0].split("-")[1]
            if k.isdigit() and int(k) < n - 1 and int(k) not in keep:
                old.unlink()
    return prefix


def saved(ckdir) -> list[int]:
    """The numbers of the checkpoints ``ckdir`` holds, in order."""
    found = (p.name[len("ckpt-"):-len(".index")] for p in Path(ckdir).glob("ckpt-*.index"))
    return sorted(int(k) for k in found if k.isdigit())


def random_states(model) -> list:
    """The seed-generator states of ``model``'s layers (dropout's random stream, as Keras
    keeps it). ``model.variables`` lists them, but ``tf.train.Checkpoint(model=...)`` does
    not save them; checkpoint them beside the model (``rng=random_states(model)``) so that a
    resumed run draws the dropout masks an uninterrupted one would."""
    return [sg.state for layer in model._flatten_layers(include_self=True)
            for sg in getattr(layer, "_seed_generators", [])]
