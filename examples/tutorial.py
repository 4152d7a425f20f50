"""TensorFlow's "Build a Convolutional Neural Network using Estimators" tutorial, step for step,
on cnn-mnist's Python API. Each block keeps the tutorial's comment; where PyTorch differs, a
note says how.

Run: python examples/tutorial.py   (the tutorial's 20,000 steps; --steps N for fewer)
"""

import argparse

import torch
import torch.nn.functional as F

import cnn_mnist
from cnn_mnist import Estimator, Mode, ModelParams, ProbabilitiesLogHook, numpy_input_fn
from cnn_mnist.model.model_fn import EstimatorSpec
from cnn_mnist.model.network import as_image_batch


def cnn_model_fn(network, features, labels, mode):
    """Model function for CNN.

    TensorFlow created the layers inside this function on its first call; in PyTorch they are
    modules that keep their weights between calls, so the Estimator builds them (``network``)
    and passes them in. The computation below is the tutorial's, layer by layer.
    """
    # Input Layer: [batch_size, 28, 28, 1] in TF; (batch_size, 1, 28, 28) in PyTorch
    input_layer = as_image_batch(features)

    # Convolutional Layer #1: 32 5x5 filters, 'same' padding, ReLU
    conv1 = torch.relu(network.conv1(input_layer))  # (N, 32, 28, 28)
    # Pooling Layer #1: 2x2, stride 2
    pool1 = network.pool(conv1)  # (N, 32, 14, 14)

    # Convolutional Layer #2 and Pooling Layer #2
    conv2 = torch.relu(network.conv2(pool1))  # (N, 64, 14, 14)
    pool2 = network.pool(conv2)  # (N, 64, 7, 7)

    # Dense Layer: flattened (7, 7, 64) row by row, as TF's NHWC reshape did
    pool2_flat = pool2.permute(0, 2, 3, 1).reshape(-1, 7 * 7 * 64)  # (N, 3136)
    dense = torch.relu(network.dense(pool2_flat))  # (N, 1024)
    dropout = F.dropout(dense, p=0.4, training=mode == Mode.TRAIN)

    # Logits Layer
    logits = network.logits(dropout)  # (N, 10)

    predictions = {
        # Generate predictions (for PREDICT and EVAL mode)
        "classes": torch.argmax(logits, dim=1),
        # The tutorial named this "softmax_tensor" for its logging hook; here the hook reads it
        # from the predictions.
        "probabilities": torch.softmax(logits, dim=1),
    }
    if mode == Mode.PREDICT:
        return EstimatorSpec(mode=mode, predictions=predictions)

    # Calculate Loss (for both TRAIN and EVAL modes)
    loss = F.cross_entropy(logits, labels)

    # Configure the Training Op (for TRAIN mode): the Estimator runs backward() and the
    # optimizer's step() on this loss; the optimizer is named in ModelParams below.
    if mode == Mode.TRAIN:
        return EstimatorSpec(mode=mode, predictions=predictions, loss=loss)

    # Add evaluation metrics (for EVAL mode): per-example values, averaged over the whole set
    eval_metric_ops = {"accuracy": (predictions["classes"] == labels).float()}
    return EstimatorSpec(mode=mode, predictions=predictions, loss=loss, eval_metrics=eval_metric_ops)


def main(steps=20_000, model_dir="runs/mnist_convnet_model", data_dir=None):
    # Load training and eval data (downloaded and verified on first use)
    mnist = cnn_mnist.load_mnist(data_dir)
    train_data = mnist.train.images  # uint8 tensor (55000, 28, 28); scaled to [0, 1] per batch
    train_labels = mnist.train.labels
    eval_data = mnist.test.images
    eval_labels = mnist.test.labels

    # Create the Estimator; tf.train.GradientDescentOptimizer(learning_rate=0.001) becomes params
    mnist_classifier = Estimator(model_fn=cnn_model_fn, model_dir=model_dir,
                                 params=ModelParams(optimizer="sgd", learning_rate=0.001))

    # Set up logging for predictions: LoggingTensorHook on "softmax_tensor", every 50 iterations
    logging_hook = ProbabilitiesLogHook(every_n_steps=50)

    # Train the model
    train_input_fn = numpy_input_fn(x={"x": train_data}, y=train_labels, batch_size=100, num_epochs=None,
                                    shuffle=True)
    # The tutorial passed steps=20000, which adds 20,000 steps every time the script runs;
    # max_steps is the absolute target, so running this twice does not train twice.
    mnist_classifier.train(input_fn=train_input_fn, max_steps=steps, hooks=[logging_hook])

    # Evaluate the model and print results
    eval_input_fn = numpy_input_fn(x={"x": eval_data}, y=eval_labels, num_epochs=1, shuffle=False)
    eval_results = mnist_classifier.evaluate(input_fn=eval_input_fn)
    print(eval_results)
    return eval_results


if __name__ == "__main__":
    # tf.app.run() set up INFO logging and called main(); logging.basicConfig does the first part.
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--model-dir", default="runs/mnist_convnet_model")
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    main(args.steps, args.model_dir, args.data_dir)
