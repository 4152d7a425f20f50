"""The model layer: the tutorial's network, the model function (TRAIN, EVAL, PREDICT) and its
optimizers, and the configuration dataclasses with the named presets.

It may import the data layer (a preset names its augmentation) and the kernels below it, never
training or anything above.
"""
