"""Input functions: batches as index slices of in-memory tensors, with a resumable position.

``numpy_input_fn`` mirrors ``tf.estimator.inputs.numpy_input_fn``. The batches it yields are
``images[indices]`` of a uint8 tensor, so there is no DataLoader, no worker and no copy of the
dataset; the network scales pixels to [0, 1] per batch. The stream knows where it is in the
data order (epoch, offset), so a checkpoint can store that and a resumed run continues with
exactly the batches an uninterrupted run would have seen.

On a GPU the Estimator moves the stream there once (``ArrayStream.to``): the images stay resident
in device memory as uint8 (47 MB for MNIST's 60,000), each epoch's permutation is drawn there and
augmentation runs there, so a training step copies nothing from the host and waits for nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from cnn_mnist.data.augment import Augmentation, augment, augment_views

Batch = tuple[torch.Tensor, torch.Tensor | None]


class ArrayStream:
    """An iterator over (images, labels) batches of in-memory arrays."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, batch_size: int,
                 num_epochs: int | None, shuffle: bool, seed: int, augmentation: Augmentation | None = None,
                 paired: bool = False):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.batch_size, self.num_epochs, self.shuffle, self.seed = batch_size, num_epochs, shuffle, seed
        self.augmentation = augmentation if augmentation else None
        self.paired = paired  # each image's clean and damaged views, (N, 2, 1, 28, 28), while damage applies
        self.epoch, self.offset = 0, 0  # position of the next example in the data order
        self._order, self._order_epoch = None, -1
        self._generator: torch.Generator | None = None  # made on first use, see _seeded

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> ArrayStream:
        """This stream with its arrays on ``device`` (itself if they are there), at the same position.

        The data order and the augmentation are drawn on the data's device: the same on every run
        there, but another device's generator draws other numbers (so a run resumed on another
        device continues, but not bit for bit)."""
        device = torch.device(device)
        if self.images.device == device or (device.index is None and self.images.device.type == device.type):
            return self
        moved = ArrayStream(self.images.to(device), None if self.labels is None else self.labels.to(device),
                            self.batch_size, self.num_epochs, self.shuffle, self.seed, self.augmentation, self.paired)
        moved.epoch, moved.offset = self.epoch, self.offset
        return moved

    def __len__(self) -> int:
        """Number of examples in one epoch."""
        return len(self.images)

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        n = len(self.images)
        start = (self.epoch, self.offset)
        pieces, wanted = [], self.batch_size
        # A batch may span an epoch boundary when repeating (num_epochs=None), as TF's did.
        while wanted and n and (self.num_epochs is None or self.epoch < self.num_epochs):
            take = min(wanted, n - self.offset)
            pieces.append(self._epoch_order()[self.offset:self.offset + take])
            wanted -= take
            self.offset += take
            if self.offset == n:
                self.epoch, self.offset = self.epoch + 1, 0
        if not pieces:
            raise StopIteration
        index = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        images = self.images[index]
        if self.augmentation is not None:
            # Random numbers from (seed, position) alone: a resumed stream redraws the same ones.
            # The damage ingredients begin (and may end) at a position in the data, so a resumed
            # run agrees too.
            damage = self.augmentation.damages_at(start[0] + start[1] / n)
            generator = self._seeded(_seed_for(self.seed, *start, salt=1))
            if self.paired and damage:
                images = augment_views(images, self.augmentation, generator)
            else:
                images = augment(images, self.augmentation, generator, damage)
        return images, None if self.labels is None else self.labels[index]

    def _epoch_order(self) -> torch.Tensor:
        if self._order_epoch != self.epoch:
            n = len(self.images)
            if self.shuffle:
                # Each epoch's permutation depends on (seed, epoch) alone, so a resumed stream
                # rebuilds it from the two numbers without replaying earlier epochs.
                generator = self._seeded(_seed_for(self.seed, self.epoch))
                self._order = torch.randperm(n, generator=generator, device=self.device)
            else:
                self._order = torch.arange(n, device=self.device)
            self._order_epoch = self.epoch
        return self._order

    def _seeded(self, seed: int) -> torch.Generator:
        """The stream's generator, on the data's device, reseeded: one for every epoch's order
        and every augmented batch, so each draw depends on (seed, position) alone."""
        if self._generator is None:
            self._generator = torch.Generator(device=self.device)
        return self._generator.manual_seed(seed)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset, "seed": self.seed,
                "shuffle": self.shuffle, "num_examples": len(self.images)}

    def load_state_dict(self, state: dict) -> bool:
        """Continue from a saved position; False (and no change) if it belongs to other data."""
        same_data = (state.get("num_examples") == len(self.images) and state.get("seed") == self.seed
                     and state.get("shuffle") == self.shuffle)
        if same_data:
            self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
        return same_data


def _seed_for(*numbers: int, salt: int = 0) -> int:
    """A 32-bit seed mixed from the numbers (numpy's SeedSequence: nearby inputs, unrelated seeds)."""
    return int(np.random.SeedSequence([*numbers, salt] if salt else list(numbers)).generate_state(1)[0])


def numpy_input_fn(x, y=None, *, batch_size: int = 128, num_epochs: int | None = 1,
                   shuffle: bool = True, seed: int = 0,
                   augmentation: Augmentation | None = None, paired: bool = False) -> Callable[[], ArrayStream]:
    """An input function over arrays: ``x`` is images (or ``{"x": images}``), ``y`` labels.

    ``num_epochs=None`` repeats forever (training); ``shuffle=False`` keeps file order
    (evaluation). Images may be uint8 in [0, 255] or float in [0, 1]. With ``augmentation``
    each batch is randomly transformed (see ``augment``) and comes as float in [0, 1]; ``paired``
    then gives each image's clean and damaged views (see ``augment_views``), for a consistency loss.
    """
    if isinstance(x, dict):
        if len(x) != 1:
            raise ValueError(f"x must hold one array of images, got keys {sorted(x)}")
        (x,) = x.values()
    images = torch.as_tensor(x)
    labels = None if y is None else torch.as_tensor(y).long()
    return lambda: ArrayStream(images, labels, batch_size, num_epochs, shuffle, seed, augmentation, paired)
