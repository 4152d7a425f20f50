"""The data layer: MNIST's IDX files (format, download, the tutorial's splits), input functions that
batch in-memory tensors by index, augmentation, and the preparation of users' own images.

It imports nothing from the rest of the package but ``cnn_mnist.errors`` and ``cnn_mnist.progress``.
"""
