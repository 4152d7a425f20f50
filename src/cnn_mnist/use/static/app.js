// The draw-a-digit page: pointer strokes on a canvas, sent as a PNG to POST /v1/predict while
// drawing (at most every PREDICT_EVERY_MS) and at each stroke's end; the newest answer is shown.
// The same PNG then goes to POST /v1/explain, one request at a time: a drawing that changes while
// one is out waits, and only the newest is sent when it returns.
// In the static site (body data-backend="onnx") the pad's pixels go to onnx-model.js instead,
// which answers both at once in the page, one run at a time, the newest drawing next.
"use strict";

(() => {
  const PREDICT_EVERY_MS = 200;
  const EXPORT_SIZE = 280;                       // the PNG sent is this square, whatever the screen
  const PAPER = "#fcf9f0", INK = "#15181e";      // dark ink on light paper; the server inverts it
  const PENS = { thin: 0.045, medium: 0.065, bold: 0.09 };  // stroke width as a share of the pad's side

  const pad = document.getElementById("pad");
  const padContext = pad.getContext("2d");
  const hint = document.getElementById("pad-hint");
  const result = document.getElementById("result");
  const topClass = document.getElementById("top-class");
  const label = document.getElementById("verdict-label");
  const detail = document.getElementById("verdict-detail");
  const seen = document.getElementById("seen");
  const seenContext = seen.getContext("2d");
  const bars = Array.from(document.querySelectorAll("#bars li"));
  const modelInfo = document.getElementById("model-info");
  const inside = document.getElementById("inside");
  const insideLede = document.getElementById("inside-lede");
  const stagesBox = document.getElementById("stages");
  const filterView = document.getElementById("filter-view");
  const filterCanvas = document.getElementById("filter");
  const filterCaption = document.getElementById("filter-caption");
  const attributionCanvas = document.getElementById("attribution");
  const attributionCaption = document.getElementById("attribution-caption");
  const attributionNote = attributionCaption.textContent;  // the served page's, or why the static one has none
  const inBrowser = document.body.dataset.backend === "onnx";

  // strokes in pad units (0-1 on both axes), so the pad can be redrawn at any size and exported at one
  const strokes = [];
  let current = null;        // the stroke under the pointer
  let activePointer = null;
  let penWidth = PENS.medium;
  let version = 0;           // bumped at every change of the drawing
  let shownVersion = 0;      // the drawing version whose answer is on screen
  let timer = null;
  let explaining = false;    // a /v1/explain request is out
  let explainWanted = 0;     // the newest drawing version waiting for an explanation (0: none)
  let filters = null;        // conv1's kernels, from the newest explanation
  let modelReady = null;     // static site: resolves when the model is loaded
  let running = false;       // static site: a run is under way
  let runAgain = false;      // ... and the drawing changed meanwhile

  // -- drawing ------------------------------------------------------------------------------------

  function fitPad() {
    const side = Math.round(pad.getBoundingClientRect().width * (window.devicePixelRatio || 1));
    if (side > 0 && side !== pad.width) {
      pad.width = pad.height = Math.min(side, 1600);
    }
    render(padContext, pad.width);
  }

  function render(context, side) {
    context.fillStyle = PAPER;
    context.fillRect(0, 0, side, side);
    for (const stroke of strokes) drawStroke(context, side, stroke, 0);
  }

  function drawStroke(context, side, stroke, from) {
    const points = stroke.points;
    context.strokeStyle = INK;
    context.fillStyle = INK;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.lineWidth = stroke.width * side;
    if (points.length === 1) {
      context.beginPath();
      context.arc(points[0][0] * side, points[0][1] * side, stroke.width * side / 2, 0, 2 * Math.PI);
      context.fill();
      return;
    }
    context.beginPath();
    const start = Math.max(from - 1, 0);
    context.moveTo(points[start][0] * side, points[start][1] * side);
    for (let i = start + 1; i < points.length; i++) context.lineTo(points[i][0] * side, points[i][1] * side);
    context.stroke();
  }

  function padPoint(event) {
    const box = pad.getBoundingClientRect();
    const clamp = (value) => Math.min(Math.max(value, 0), 1);
    return [clamp((event.clientX - box.left) / box.width), clamp((event.clientY - box.top) / box.height)];
  }

  pad.addEventListener("pointerdown", (event) => {
    if (activePointer !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    activePointer = event.pointerId;
    pad.setPointerCapture(event.pointerId);
    current = { width: penWidth, points: [padPoint(event)] };
    strokes.push(current);
    drawStroke(padContext, pad.width, current, 0);
    changed();
  });

  pad.addEventListener("pointermove", (event) => {
    if (event.pointerId !== activePointer) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    const from = current.points.length;
    for (const each of events.length ? events : [event]) current.points.push(padPoint(each));
    drawStroke(padContext, pad.width, current, from);
    changed();
  });

  function endStroke(event) {
    if (event.pointerId !== activePointer) return;
    activePointer = null;
    current = null;
    predictNow();
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  function changed() {
    version += 1;
    hint.classList.add("hidden");
    result.dataset.settled = "false";
    if (timer === null) timer = setTimeout(() => { timer = null; predict(); }, PREDICT_EVERY_MS);
  }

  function clear() {
    strokes.length = 0;
    current = null;
    activePointer = null;
    if (timer !== null) { clearTimeout(timer); timer = null; }
    version += 1;
    shownVersion = version;
    render(padContext, pad.width);
    hint.classList.remove("hidden");
    showEmpty();
    explainWanted = 0;
    showInsideEmpty("Draw a digit to see what each layer makes of it.");
  }

  // -- predicting ---------------------------------------------------------------------------------

  function predictNow() {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    predict();
  }

  function exportCanvas() {   // the drawing at EXPORT_SIZE, whatever the screen
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = EXPORT_SIZE;
    render(canvas.getContext("2d", { willReadFrequently: inBrowser }), EXPORT_SIZE);
    return canvas;
  }

  function exportPng() {
    return new Promise((resolve) => exportCanvas().toBlob(resolve, "image/png"));
  }

  function exportPixels() {   // RGBA, as the static site's model takes it
    return exportCanvas().getContext("2d").getImageData(0, 0, EXPORT_SIZE, EXPORT_SIZE).data;
  }

  async function predict() {
    if (inBrowser) return predictInBrowser();
    if (!strokes.length) return;
    const asked = version;
    let state, answer;
    try {
      const response = await fetch("v1/predict?include_prepared=true", {
        method: "POST", headers: { "Content-Type": "image/png" }, body: await exportPng(),
      });
      const body = await response.json();
      if (response.ok) {
        answer = body;
        state = body.predictions[0].no_digit ? "no-digit" : "digit";
      } else {
        state = "error";
        answer = { detail: body.detail || `HTTP ${response.status}` };
      }
    } catch (error) {
      state = "error";
      answer = { detail: "The server did not answer; is it running?" };
    }
    if (asked < shownVersion) return;          // an answer to a newer drawing is already on screen
    shownVersion = asked;
    if (state === "error") showError(answer.detail);
    else if (state === "no-digit") showNoDigit(answer.predictions[0]);
    else showDigit(answer.predictions[0]);
    describeModel(answer);
    settle();
    if (state === "digit") requestExplanation(asked);
    else showInsideEmpty(state === "no-digit" ? "No digit to look inside." : "Draw a digit to see what each layer makes of it.");
  }

  async function predictInBrowser() {
    if (running) { runAgain = true; return; }      // ONNX Runtime runs one session call at a time
    running = true;
    try {
      do { runAgain = false; await answerInBrowser(); } while (runAgain);
    } finally {
      running = false;
    }
  }

  async function answerInBrowser() {
    if (!strokes.length) return;
    const asked = version;
    const started = performance.now();
    let answer = null, problem = null, rgba = null;
    try {
      await modelReady;
      rgba = exportPixels();
      answer = await OnnxModel.run(rgba, EXPORT_SIZE);
    } catch (error) {
      problem = `The model did not run: ${error && error.message ? error.message : error}`;
    }
    if (asked < shownVersion || !strokes.length) return;  // a newer drawing is on screen, or none
    shownVersion = asked;
    if (problem) {
      showError(problem);
      showInsideEmpty("Draw a digit to see what each layer makes of it.");
    } else if (answer.prediction.no_digit) {
      showNoDigit(answer.prediction);
      showInsideEmpty("No digit to look inside.");
    } else {
      showDigit(answer.prediction);
      showInside(answer.explanation);
      await Promise.all(Array.from(stagesBox.querySelectorAll("img"), (image) => image.decode().catch(() => {})));
    }
    settle();
    // what the page answered, for its tests and benchmark: the pixels in, the answer, the time it took
    window.cnnMnistLast = { version: asked, rgba, ms: performance.now() - started,
                            prediction: answer && answer.prediction };
  }

  // -- explaining ---------------------------------------------------------------------------------

  function requestExplanation(asked) {
    explainWanted = Math.max(explainWanted, asked);
    if (!explaining) explain();
  }

  async function explain() {
    const asked = explainWanted;
    explainWanted = 0;
    explaining = true;
    inside.dataset.busy = "true";
    try {
      const response = await fetch("v1/explain", {
        method: "POST", headers: { "Content-Type": "image/png" }, body: await exportPng(),
      });
      const body = await response.json();
      const explanation = response.ok ? body.explanations[0] : null;
      if (asked === shownVersion && strokes.length) {   // still the drawing on screen
        if (explanation && !explanation.no_digit) showInside(explanation);
        else showInsideEmpty(explanation ? "No digit to look inside." : (body.detail || `HTTP ${response.status}`));
      }
    } catch (error) {
      showInsideEmpty("The server did not answer the explanation.");
    }
    explaining = false;
    inside.dataset.busy = "false";
    if (explainWanted && explainWanted >= shownVersion) explain();   // coalesced: only the newest drawing
  }

  function showInsideEmpty(message) {
    inside.dataset.state = "empty";
    insideLede.textContent = message;
    stagesBox.replaceChildren();
    filters = null;
    filterView.dataset.filter = "";
    filterCaption.textContent = "Click a conv1 map to see the 5x5 filter that made it.";
    clearCanvas(filterCanvas);
    clearCanvas(attributionCanvas);
    attributionCaption.textContent = attributionNote;
  }

  function showInside(explanation) {
    inside.dataset.state = "ready";
    insideLede.textContent = "Each stage as the tutorial names it, with its shape. Black is 0; white is the " +
      "stage's largest value, shown under it. Click a conv1 map to see its filter.";
    const figures = [stageFigure("input", "input [batch, 28, 28, 1]", inputTile(explanation.prepared), "0", "255")];
    for (const stage of explanation.stages) {
      const figure = stageFigure(stage.name, stage.label, stage.tile, "0", stage.max.toPrecision(3));
      if (stage.name === "dense") {
        const units = stage.top_units.slice(0, 5).map(String).join(", ");
        figure.querySelector("figcaption").append(` · most active units: ${units}`);
      }
      if (stage.name === "conv1") {
        const image = figure.querySelector("img");
        image.classList.add("clickable");
        image.title = "Click a map to see its 5x5 filter";
        image.addEventListener("click", (event) => selectFilter(event, image, stage));
      }
      figures.push(figure);
    }
    figures.push(probabilityFigure(explanation));
    stagesBox.replaceChildren(...figures);
    filters = explanation.filters;
    const selected = Number(filterView.dataset.filter);
    if (filterView.dataset.filter !== "") drawFilter(selected);
    if (explanation.attribution) drawAttribution(explanation.attribution);
  }

  function stageFigure(name, label, source, low, high) {
    const figure = document.createElement("figure");
    figure.className = "stage";
    figure.dataset.stage = name;
    const image = document.createElement("img");
    image.src = source;
    image.alt = label;
    const caption = document.createElement("figcaption");
    const scale = document.createElement("span");
    scale.className = "scale grey";
    scale.setAttribute("aria-hidden", "true");
    const range = document.createElement("span");
    range.className = "range";
    range.textContent = `${low} – ${high}`;
    caption.append(label, document.createElement("br"), scale, range);
    figure.append(image, caption);
    return figure;
  }

  function probabilityFigure(explanation) {
    const figure = document.createElement("figure");
    figure.className = "stage";
    figure.dataset.stage = "softmax";
    const list = document.createElement("ol");
    list.className = "mini-bars";
    explanation.probabilities.forEach((p, digit) => {
      const item = document.createElement("li");
      item.style.setProperty("--p", String(p));
      item.classList.toggle("top", digit === explanation.class);
      item.textContent = String(digit);
      list.append(item);
    });
    const caption = document.createElement("figcaption");
    caption.textContent = "logits [batch, 10] → softmax";
    figure.append(list, caption);
    return figure;
  }

  function inputTile(prepared) {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = 28;
    const context = canvas.getContext("2d");
    const image = context.createImageData(28, 28);
    prepared.flat().forEach((value, at) => {
      image.data.set([value, value, value, 255], 4 * at);
    });
    context.putImageData(image, 0, 0);
    return canvas.toDataURL("image/png");
  }

  function selectFilter(event, image, stage) {
    const box = image.getBoundingClientRect();
    const rows = Math.ceil(stage.shape[0] / stage.columns);
    const column = Math.min(stage.columns - 1, Math.floor((event.clientX - box.left) / box.width * stage.columns));
    const row = Math.min(rows - 1, Math.floor((event.clientY - box.top) / box.height * rows));
    drawFilter(row * stage.columns + column);
  }

  function drawFilter(index) {
    if (!filters || !(index >= 0 && index < filters.values.length)) return;
    filterView.dataset.filter = String(index);
    paintDiverging(filterCanvas, filters.values[index], filters.max_abs);
    filterCaption.textContent = `conv1 filter ${index} (5x5): red weights add, blue ones subtract. Map ${index} ` +
      "is this filter slid over the input, then ReLU. Scale: ±" + filters.max_abs.toPrecision(2);
  }

  function drawAttribution(attribution) {
    paintDiverging(attributionCanvas, attribution.values, attribution.max_abs);
    attributionCaption.textContent = `Red pixels pushed the answer towards ${attribution.towards}, blue ones ` +
      `towards ${attribution.against}, the runner-up (integrated gradients from a blank image; ±` +
      `${attribution.max_abs.toPrecision(2)} at full colour).`;
  }

  function paintDiverging(canvas, rows, maxAbs) {
    const height = rows.length, width = rows[0].length;
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    const image = context.createImageData(width, height);
    const scale = maxAbs > 0 ? 1 / maxAbs : 0;
    rows.flat().forEach((value, at) => {
      const t = Math.max(-1, Math.min(1, value * scale));
      const fade = Math.round(255 * (1 - Math.abs(t)));        // white at 0, full colour at ±max
      image.data.set(t >= 0 ? [255, fade, fade, 255] : [fade, fade, 255, 255], 4 * at);
    });
    context.putImageData(image, 0, 0);
  }

  function clearCanvas(canvas) {
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  }

  function settle() {
    result.dataset.settled = String(shownVersion === version && timer === null && activePointer === null);
  }

  // -- showing ------------------------------------------------------------------------------------

  function setState(state) {
    result.dataset.state = state;
  }

  function showDigit(prediction) {
    const probabilities = prediction.probabilities;
    const best = prediction.class;
    setState("digit");
    topClass.textContent = String(best);
    label.textContent = `It looks like a ${best}`;
    const runnerUp = probabilities.map((p, digit) => [p, digit]).filter(([, digit]) => digit !== best)
      .sort((a, b) => b[0] - a[0])[0];
    detail.textContent = `${percent(probabilities[best])} sure; next best is ${runnerUp[1]} at ${percent(runnerUp[0])}.`;
    bars.forEach((bar, digit) => {
      bar.classList.toggle("top", digit === best);
      bar.querySelector(".bar-fill").style.transform = `scaleY(${probabilities[digit]})`;
      bar.querySelector(".bar-value").textContent = percent(probabilities[digit], "0%");  // narrow columns
    });
    drawSeen(prediction.prepared);
  }

  function showNoDigit(prediction) {
    setState("no-digit");
    topClass.textContent = "?";
    label.textContent = "No digit found";
    detail.textContent = "The drawing is too faint or too small to read. Draw a bigger digit.";
    resetBars();
    drawSeen(prediction.prepared);
  }

  function showEmpty() {
    setState("empty");
    result.dataset.settled = "true";
    topClass.textContent = "–";
    label.textContent = "No digit yet";
    detail.textContent = "Probabilities appear as you draw.";
    resetBars();
    drawSeen(null);
  }

  function showError(message) {
    setState("error");
    topClass.textContent = "!";
    label.textContent = "No prediction";
    detail.textContent = message;
    resetBars();
  }

  function resetBars() {
    for (const bar of bars) {
      bar.classList.remove("top");
      bar.querySelector(".bar-fill").style.transform = "scaleY(0)";
      bar.querySelector(".bar-value").textContent = "–";
    }
  }

  function drawSeen(prepared) {
    const image = seenContext.createImageData(28, 28);
    for (let row = 0; row < 28; row++) {
      for (let col = 0; col < 28; col++) {
        const value = prepared ? prepared[row][col] : 0;
        const at = 4 * (row * 28 + col);
        image.data[at] = image.data[at + 1] = image.data[at + 2] = value;
        image.data[at + 3] = 255;
      }
    }
    seenContext.putImageData(image, 0, 0);
  }

  function percent(p, tiny = "<0.1%") {
    const value = 100 * p;
    if (value >= 99.95) return "100%";
    if (value >= 10) return `${value.toFixed(0)}%`;
    return value >= 0.05 ? `${value.toFixed(1)}%` : value > 0 ? tiny : "0%";
  }

  function describeModel(body) {
    if (body && body.global_step !== undefined) {
      modelInfo.textContent = `Model at global step ${body.global_step.toLocaleString("en")} · ${body.checkpoint}`;
    }
  }

  // -- wiring -------------------------------------------------------------------------------------

  document.getElementById("clear").addEventListener("click", clear);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") clear();
  });
  for (const input of document.querySelectorAll('input[name="pen"]')) {
    input.addEventListener("change", () => { penWidth = PENS[input.value]; });
  }
  new ResizeObserver(fitPad).observe(pad);
  fitPad();
  showEmpty();
  if (!inBrowser) {
    fetch("healthz").then((response) => response.json()).then(describeModel).catch(() => {
      modelInfo.textContent = "The model server did not answer.";
    });
  } else if (location.protocol === "file:") {
    // Browsers refuse the runtime's WebAssembly from file:// pages: say so instead of hanging.
    const how = "Serve this folder to use the page: run python -m http.server in it, then open localhost:8000";
    modelInfo.textContent = how;
    showError(how);
    modelReady = Promise.reject(new Error(how));
    modelReady.catch(() => {});
  } else {
    modelReady = OnnxModel.load();
    modelReady.then((about) => {
      describeModel(about);
      window.cnnMnistReadyMs = performance.now();  // since navigation began: what the benchmark reports
      document.body.dataset.ready = "true";
    }, (error) => {
      modelInfo.textContent = `The model did not load: ${error && error.message ? error.message : error}`;
    });
  }
})();
