"""``python -m cnn_mnist``: the same command line as ``cnn-mnist``."""

from cnn_mnist.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
