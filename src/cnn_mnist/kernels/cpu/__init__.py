"""The CPU's own speed code: the C pool+ReLU kernel (``csrc/pool_relu.c``) and its builder
(``native``), the dense layer through oneDNN (``fast_linear``), and the allocator setting
(``allocator``). ``cnn_mnist.kernels.layers`` decides when they run.
"""
