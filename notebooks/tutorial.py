# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A convolutional network for handwritten digits
#
# TensorFlow's tutorial *Build a Convolutional Neural Network using Estimators* taught a small
# network to read the handwritten digits of MNIST. This notebook follows the same path with
# **cnn-mnist**, the tutorial rebuilt on PyTorch: the data, the layers, training with the tutorial's
# recipe, evaluation, predictions on test digits and on a picture of your own, a look inside the
# network, and its mistakes.
#
# Run the cells in order. The next cell holds the one setting worth changing: `STEPS`, the
# tutorial's 20,000 training steps (a few minutes on a laptop's CPU, seconds on a GPU). A smaller
# number gives a quick, less accurate run; running the notebook again continues from where the
# last run stopped, up to `STEPS`.

# %% tags=["parameters"]
STEPS = 20_000  # training steps: the tutorial's 20,000
MODEL_DIR = "runs/notebook_model"  # where checkpoints go; a second run resumes from them

# %%
import logging

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

import cnn_mnist
from cnn_mnist import Estimator, ModelParams, ProgressHook, RunConfig, numpy_input_fn

# INFO lines from the Estimator, as the tutorial's tf.logging.set_verbosity(INFO) gave them
logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
print("cnn-mnist", cnn_mnist.__version__, "on torch", torch.__version__)

# %% [markdown]
# ## MNIST
#
# MNIST holds 70,000 handwritten digits, each a 28x28 greyscale image with its label 0-9:
# 60,000 for training (the tutorial trains on 55,000 and holds 5,000 back for validation) and
# 10,000 for testing. `load_mnist` downloads the four files once, checks them, and keeps them in
# memory as uint8 tensors.

# %%
mnist = cnn_mnist.load_mnist()
train, test = mnist.train, mnist.test
print("train:", tuple(train.images.shape), train.images.dtype, " test:", tuple(test.images.shape))
print("images per digit in training:", np.bincount(train.labels.numpy()).tolist())

figure, axes = plt.subplots(4, 12, figsize=(12, 4.6))
for ax, image, label in zip(axes.flat, train.images, train.labels, strict=False):  # the first 48
    ax.imshow(image, cmap="gray_r")
    ax.set_title(int(label))
    ax.set_axis_off()
plt.show()

# %% [markdown]
# ## The network, layer by layer
#
# The tutorial's network has two convolution-and-pooling stages, then a dense layer and the
# logits, one per digit:
#
# - **Convolution**: each of 32 small 5x5 filters slides over the image; where the pixels under it
#   match its pattern (an edge, a stroke end) the output is large. With `same` padding a 28x28
#   image gives 32 maps of 28x28.
# - **ReLU** keeps positive responses and sets negative ones to 0: "this pattern is here" or not.
# - **Max pooling** keeps the strongest response in each 2x2 block, halving the maps' size, so the
#   next layer sees a wider part of the digit and small shifts matter less.
# - The second convolution combines the 32 maps into 64 patterns of patterns; a second pooling
#   leaves 7x7x64 numbers, which a **dense** layer of 1,024 units reads all at once.
# - **Dropout** hides 40% of those units at random in each training step, so the network cannot
#   rely on any one of them.
# - The **logits** layer gives one score per digit, and **softmax** turns the ten scores into
#   probabilities that add up to 1.
#
# Here is one digit going through the layers of a fresh (untrained) network, with each output's
# shape:

# %%
network = cnn_mnist.ConvNet().eval()
x = test.images[:1].float().div(255).unsqueeze(1)  # (batch, channel, height, width)
with torch.no_grad():
    steps = {"input": x}
    steps["conv1 + ReLU"] = torch.relu(network.conv1(steps["input"]))
    steps["pool1"] = F.max_pool2d(steps["conv1 + ReLU"], 2)
    steps["conv2 + ReLU"] = torch.relu(network.conv2(steps["pool1"]))
    steps["pool2"] = F.max_pool2d(steps["conv2 + ReLU"], 2)
    steps["flatten"] = steps["pool2"].permute(0, 2, 3, 1).flatten(1)  # row by row, as TensorFlow's reshape
    steps["dense + ReLU"] = torch.relu(network.dense(steps["flatten"]))
    steps["logits"] = network.logits(steps["dense + ReLU"])
for name, value in steps.items():
    print(f"{name:>13}: {tuple(value.shape)}")

# %% [markdown]
# PyTorch orders a batch as (batch, channels, height, width) where TensorFlow used (batch, height,
# width, channels). The summary gives TensorFlow's order, as the tutorial's comments did, and each
# layer's parameter count: 3,274,634 in all, 98% of them in the dense layer.

# %%
network.summary()

# %% [markdown]
# ## Training
#
# The tutorial's recipe: plain stochastic gradient descent with a learning rate of 0.001, batches
# of 100 shuffled images, sparse softmax cross-entropy as the loss, `STEPS` steps. The Estimator
# keeps everything in `MODEL_DIR`: checkpoints (a run picks up where the last one stopped) and
# TensorBoard summaries (`tensorboard --logdir runs`). Interrupting the kernel stops after the
# current step and saves a checkpoint; running the cell again resumes from it.

# %%
classifier = Estimator(model_dir=MODEL_DIR, params=ModelParams(optimizer="sgd", learning_rate=0.001),
                       config=RunConfig(log_step_count_steps=2_000))  # a loss line every 2,000 steps
train_input_fn = numpy_input_fn(x={"x": train.images}, y=train.labels, batch_size=100, num_epochs=None,
                                shuffle=True)
classifier.train(input_fn=train_input_fn, max_steps=STEPS, hooks=[ProgressHook()])

# %% [markdown]
# ## Evaluation
#
# Accuracy and mean loss over the 10,000 test digits, which training never saw. After the full
# 20,000 steps, compare them with TensorFlow's figures and this rebuild's on the docs' *Train and
# presets* page.

# %%
eval_input_fn = numpy_input_fn(x={"x": test.images}, y=test.labels, num_epochs=1, shuffle=False)
eval_results = classifier.evaluate(input_fn=eval_input_fn)
print(eval_results)

# %% [markdown]
# ## Predictions
#
# A `Predictor` loads the newest checkpoint once and answers many calls. Each digit below shows
# the network's answer and its probability, with the true label; a wrong answer is red.

# %%
predictor = cnn_mnist.Predictor(MODEL_DIR)
predictor.predict(test.images[:36]).with_labels(test.labels[:36])

# %% [markdown]
# ### A picture of your own
#
# A photo or a drawing is prepared the way MNIST's digits were made: the ink is found against the
# paper, cropped, scaled to fit 20x20 and centred by its mass in a 28x28 field. Here a "4" is drawn
# with Pillow and saved as a PNG; replace `my_digit.png` with a picture of your own.

# %%
from PIL import Image, ImageDraw

from cnn_mnist.data.images import prepare_image

picture = Image.new("L", (240, 300), "white")
ImageDraw.Draw(picture).line([(150, 30), (40, 190), (200, 190)], fill="black", width=22)
ImageDraw.Draw(picture).line([(150, 30), (150, 280)], fill="black", width=22)
picture.save("my_digit.png")

prepared = prepare_image("my_digit.png")  # (28, 28) uint8, white digit on black, as MNIST
figure, (left, right) = plt.subplots(1, 2, figsize=(5, 2.6))
left.imshow(picture, cmap="gray")
left.set_title("my_digit.png")
right.imshow(prepared, cmap="gray")
right.set_title("what the network sees")
for ax in (left, right):
    ax.set_axis_off()
plt.show()
predictor.predict(prepared)

# %% [markdown]
# ## Inside the network
#
# `explain` runs one digit through the trained network and keeps every stage: conv1's 32 maps
# after ReLU and after pooling, conv2's 64 likewise, the 1,024 dense units, the probabilities,
# conv1's filters, and an attribution (integrated gradients) that says which pixels pushed the
# answer towards the predicted digit (red) or the runner-up (blue).

# %%
from cnn_mnist.use.explain import explain

explanation = explain(predictor, test.images[0].numpy())
explanation

# %% [markdown]
# ### What each operation did to this digit
#
# The trained network's own first layer on the same digit: eight of conv1's filters, what each
# made of the digit (grey is 0, light is positive, dark negative), the same maps after ReLU (the
# negative responses gone) and after 2x2 max pooling (half the size, the strongest responses
# kept). Last, softmax turning the ten logits into probabilities.

# %%
digit = test.images[:1].float().div(255).unsqueeze(1).to(predictor.device)
with torch.no_grad():
    conv1 = predictor.network.conv1(digit)[0].cpu()
relu1, pool1 = torch.relu(conv1), F.max_pool2d(torch.relu(conv1), 2)
filters = predictor.network.conv1.weight[:, 0].detach().cpu()
figure, axes = plt.subplots(4, 8, figsize=(12, 6.4))
rows = (("filter", filters, "PuOr"), ("convolution", conv1, "gray"), ("ReLU", relu1, "gray"),
        ("max pooling", pool1, "gray"))
for row, (title, maps, colours) in enumerate(rows):
    for column in range(8):
        ax = axes[row, column]
        limit = float(maps[column].abs().max())
        ax.imshow(maps[column], cmap=colours, vmin=-limit, vmax=limit)
        ax.set_axis_off()
        if column == 0:
            ax.set_title(title, loc="left")
plt.show()

probabilities = torch.softmax(torch.from_numpy(explanation.logits), 0)
figure, (left, right) = plt.subplots(1, 2, figsize=(10, 2.4))
left.bar(range(10), explanation.logits)
left.set_title("logits")
right.bar(range(10), probabilities)
right.set_title("softmax: probabilities")
for ax in (left, right):
    ax.set_xticks(range(10))
plt.show()

# %% [markdown]
# ## Mistakes
#
# The test digits the network got wrong with the highest confidence. Some are ambiguous even to
# a person; others show what the network has not learned yet.

# %%
everything = predictor.predict(test.images)
wrong = np.flatnonzero(everything.classes != test.labels.numpy())
most_confident = wrong[np.argsort(-everything.probabilities[wrong].max(axis=1), kind="stable")][:18]
print(f"{len(wrong)} of {len(test.labels):,} test digits are wrong; the {len(most_confident)} most confident:")
predictor.predict(test.images[most_confident]).with_labels(test.labels[most_confident])

# %% [markdown]
# ## Where to go next
#
# - **Faster and better recipes**: `cnn-mnist train --preset fast` (Adam, a one-cycle schedule,
#   bf16) and `--preset best` (augmentation and a weight average too); *Train and presets* in the
#   docs gives their figures.
# - **A report** of this model (training curves, confusion matrix, calibration, mistakes,
#   robustness): `cnn-mnist report --model-dir runs/notebook_model`, or in a notebook
#   `cnn_mnist.use.report.write_report(MODEL_DIR)`, which shows the page inline.
# - **Export** to ONNX or safetensors: `cnn-mnist export --model-dir runs/notebook_model`.
# - **Serve** it with a draw-a-digit page: `cnn-mnist serve --model-dir runs/notebook_model`.
