"""The training layer: the Estimator and its hooks, checkpoints and their atomic writes, the model
directory's lock and run record, and the distributed context under torchrun.

It may import the model, data and kernels layers; nothing that uses a trained model, nor the CLI.
"""
