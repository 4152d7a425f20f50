"""cnn-mnist: TensorFlow's "CNN with Estimators" MNIST tutorial on PyTorch.

    from cnn_mnist import Estimator, numpy_input_fn, load_mnist

Importing starts nothing: no threads, no seeding, no downloads.
"""

from cnn_mnist.data.datasets import Dataset, Mnist, Split, load_dataset, load_mnist
from cnn_mnist.data.inputs import numpy_input_fn
from cnn_mnist.errors import CnnMnistError
from cnn_mnist.model.config import ModelParams
from cnn_mnist.model.model_fn import EstimatorSpec, Mode, cnn_model_fn
from cnn_mnist.model.network import ConvNet
from cnn_mnist.training.config import RunConfig, TrainConfig
from cnn_mnist.training.estimator import Estimator
from cnn_mnist.training.hooks import Hook, LoggingHook, ProbabilitiesLogHook, ProgressHook, TrainingRun
from cnn_mnist.training.presets import PRESETS
from cnn_mnist.use.predictor import Prediction, Predictor
from cnn_mnist.version import __version__  # noqa: F401  (cnn_mnist.__version__, as usual)

__all__ = [
    "CnnMnistError", "ConvNet", "Dataset", "Estimator", "EstimatorSpec", "Hook", "LoggingHook", "Mnist", "Mode",
    "ModelParams", "PRESETS", "Prediction", "Predictor", "ProbabilitiesLogHook", "ProgressHook", "RunConfig",
    "Split", "TrainConfig", "TrainingRun",
    "cnn_model_fn", "load_dataset", "load_mnist", "numpy_input_fn",
]
