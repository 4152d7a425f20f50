"""cnn-mnist: TensorFlow's "CNN with Estimators" MNIST tutorial on PyTorch.

    from cnn_mnist import Estimator, numpy_input_fn, load_mnist

Importing starts nothing: no threads, no seeding, no downloads.
"""

__version__ = "0.1.0"

from cnn_mnist.data.datasets import Mnist, Split, load_mnist  # noqa: E402
from cnn_mnist.data.inputs import numpy_input_fn  # noqa: E402
from cnn_mnist.errors import CnnMnistError  # noqa: E402
from cnn_mnist.model.config import PRESETS, ModelParams, RunConfig, TrainConfig  # noqa: E402
from cnn_mnist.model.model_fn import EstimatorSpec, Mode, cnn_model_fn  # noqa: E402
from cnn_mnist.model.network import ConvNet  # noqa: E402
from cnn_mnist.training.estimator import Estimator  # noqa: E402
from cnn_mnist.training.hooks import Hook, LoggingHook, ProbabilitiesLogHook, TrainingRun  # noqa: E402

__all__ = [
    "CnnMnistError", "ConvNet", "Estimator", "EstimatorSpec", "Hook", "LoggingHook", "Mnist", "Mode",
    "ModelParams", "PRESETS", "ProbabilitiesLogHook", "RunConfig", "Split", "TrainConfig", "TrainingRun",
    "cnn_model_fn", "load_mnist", "numpy_input_fn",
]
