// The static site's model: model.onnx on ONNX Runtime Web (WASM), in this page, nothing sent
// anywhere. One run takes the pad's RGBA pixels and gives what POST /v1/predict and /v1/explain
// give the served page, in the same JSON shapes (the explanation's is explain.ImageExplanation;
// test_web_site.py checks this one against its schema), so app.js shows both the same way. It has
// no attribution, which needs gradients, and no logits: the graph ends in the softmax. The
// preparation runs inside the graph: the same torch steps as prepare_image in Python.
"use strict";

window.OnnxModel = (() => {
  const TILE_COLUMNS = 8;                    // as explain.to_json's tile sheets
  let session = null;
  let about = null;          // model.json: the step, the stages' names and labels (explain.py's), conv1's filters

  async function load() {
    // Without cross-origin isolation (most static hosts) the browser allows no WASM threads: one.
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    ort.env.wasm.wasmPaths = new URL("ort/", document.baseURI).href;
    const [created, response] = await Promise.all([
      ort.InferenceSession.create("model.onnx", { executionProviders: ["wasm"], graphOptimizationLevel: "all" }),
      fetch("model.json"),
    ]);
    session = created;
    about = await response.json();
    return about;
  }

  async function run(rgba, size) {
    const feeds = { drawing: new ort.Tensor("uint8", new Uint8Array(rgba.buffer, rgba.byteOffset, rgba.length),
                                            [size, size, 4]) };
    const out = await session.run(feeds);
    const prepared = rows(Array.from(out.prepared.data), 28);
    const probabilities = Array.from(out.probabilities.data);
    const best = argmax(probabilities);
    const noDigit = Boolean(out.no_digit.data[0]);
    const prediction = { class: best, probabilities, no_digit: noDigit, prepared };
    const runnerUp = argmax(probabilities.map((p, digit) => (digit === best ? -1 : p)));
    const explanation = noDigit ? null : {   // nothing to explain in a blank drawing
      input: "drawing", no_digit: false, class: best, runner_up: runnerUp, probabilities, logits: null,
      stages: about.stages.map(({ name, label }) => stage(name, label, out[name])), attribution: null,
      filters: about.filters, prepared,
    };
    for (const name of Object.keys(out)) out[name].dispose?.();
    return { prediction, explanation };
  }

  function stage(name, label, tensor) {
    const values = tensor.data;
    let shape = tensor.dims.slice(), columns = TILE_COLUMNS;
    if (shape.length === 1) { shape = [1, 16, shape[0] / 16]; columns = 1; }  // 1024 units: a 16x64 strip
    let low = Infinity, high = -Infinity;
    for (const value of values) { if (value < low) low = value; if (value > high) high = value; }
    const entry = { name, label, shape: tensor.dims.slice(), columns, min: low, max: high,
                    tile: tileSheet(values, shape, columns, low, high) };
    if (tensor.dims.length === 1) {
      entry.top_units = Array.from(values.keys()).sort((a, b) => values[b] - values[a]).slice(0, 8);
    }
    return entry;
  }

  function tileSheet(values, [count, height, width], columns, low, high) {
    const sheetRows = Math.ceil(count / columns);
    const canvas = document.createElement("canvas");
    canvas.width = columns * width;
    canvas.height = sheetRows * height;
    const context = canvas.getContext("2d");
    const image = context.createImageData(canvas.width, canvas.height);
    const scale = high > low ? 255 / (high - low) : 0;
    for (let map = 0; map < count; map++) {
      const top = Math.floor(map / columns) * height, left = (map % columns) * width;
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const grey = Math.round((values[(map * height + y) * width + x] - low) * scale);
          const at = 4 * ((top + y) * canvas.width + left + x);
          image.data[at] = image.data[at + 1] = image.data[at + 2] = grey;
          image.data[at + 3] = 255;
        }
      }
    }
    context.putImageData(image, 0, 0);
    return canvas.toDataURL("image/png");
  }

  function rows(flat, width) {
    const out = [];
    for (let at = 0; at < flat.length; at += width) out.push(flat.slice(at, at + width));
    return out;
  }

  function argmax(values) {
    let best = 0;
    values.forEach((value, index) => { if (value > values[best]) best = index; });
    return best;
  }

  return { load, run };
})();
