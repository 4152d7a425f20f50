// The draw-a-digit page: pointer strokes on a canvas; while drawing (at most every PREDICT_EVERY_MS)
// and at each stroke's end the page asks for the drawing's prediction and, for a digit, its
// explanation, one explanation at a time (a drawing that changes while one is out waits, and only
// the newest is asked when it returns); the newest answer is shown.
// Who answers is the one place the two pages differ: the served page posts the drawing as a PNG to
// POST /v1/predict and /v1/explain; the static site (body data-backend="onnx") runs the model in
// the page through onnx-model.js, one run at a time, which gives both answers at once. Both give
// the same shapes, so everything else here has one path.
"use strict";

(() => {
  const PREDICT_EVERY_MS = 200;
  const EXPORT_SIZE = 280;                       // the PNG sent is this square, whatever the screen
  const PAPER = "#fcf9f0", INK = "#15181e";      // dark ink on light paper; the server inverts it
  const PENS = { thin: 0.045, medium: 0.065, bold: 0.09 };  // stroke width as a share of the pad's side
  const BLANK = Array.from({ length: 28 }, () => new Array(28).fill(0));   // 28x28 black: nothing seen yet
  const SERVE_IT = "Serve this folder to use the page: run python -m http.server in it, then open localhost:8000";

  const pad = document.getElementById("pad");
  const padContext = pad.getContext("2d");
  const hint = document.getElementById("pad-hint");
  const result = document.getElementById("result");
  const topClass = document.getElementById("top-class");
  const label = document.getElementById("verdict-label");
  const detail = document.getElementById("verdict-detail");
  const seen = document.getElementById("seen");
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
  let exported = null;       // the newest drawing as the answerer takes it (exportDrawing)
  let timer = null;
  let explaining = false;    // an explanation is being asked for, or drawn
  let explainWanted = null;  // the newest drawing waiting for an explanation
  let filters = null;        // conv1's kernels, from the newest explanation

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
    explainWanted = null;
    showInsideEmpty("Draw a digit to see what each layer makes of it.");
  }

  // -- who answers --------------------------------------------------------------------------------
  // An answerer takes a drawing (exportDrawing) and gives a prediction, shaped as /v1/predict's
  // rows, and an explanation, shaped as /v1/explain's (explain.ImageExplanation); null where a newer
  // drawing made the question moot. Its problems are Errors whose message the page shows.

  const answerer = inBrowser ? browserAnswerer() : serverAnswerer();

  function serverAnswerer() {
    async function post(path, drawing, unanswered) {
      let response, body;
      try {
        response = await fetch(path, { method: "POST", headers: { "Content-Type": "image/png" },
                                       body: await drawing.png() });
        body = await response.json();
      } catch (error) {
        throw new Error(unanswered);
      }
      if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
      return body;
    }
    return {
      async load() {
        try {
          return await (await fetch("healthz")).json();
        } catch (error) {
          throw new Error("The model server did not answer.");
        }
      },
      async predict(drawing) {   // requests overlap; the page shows the newest answer
        const body = await post("v1/predict?include_prepared=true", drawing,
                                "The server did not answer; is it running?");
        return { model: body, prediction: body.predictions[0] };
      },
      async explain(drawing) {
        return (await post("v1/explain", drawing, "The server did not answer the explanation.")).explanations[0];
      },
    };
  }

  function browserAnswerer() {
    const runs = new WeakMap();   // drawing -> the run that answered it
    let model = null;             // OnnxModel.load(), started once: the model's description when it is ready
    let queue = Promise.resolve(), newest = null;

    function loading() {
      // Browsers refuse the runtime's WebAssembly from file:// pages: say so instead of hanging.
      if (location.protocol === "file:") return Promise.reject(new Error(SERVE_IT));
      model = model || OnnxModel.load();
      return model;
    }

    async function load() {
      try {
        return await loading();
      } catch (error) {
        throw location.protocol === "file:" ? error : new Error(`The model did not load: ${messageOf(error)}`);
      }
    }

    async function run(drawing) {
      if (drawing !== newest) return null;
      try {
        const about = await loading();
        runs.set(drawing, await OnnxModel.run(drawing.rgba(), EXPORT_SIZE));
        return { model: about, prediction: runs.get(drawing).prediction };
      } catch (error) {
        throw new Error(`The model did not run: ${messageOf(error)}`);
      }
    }

    return {
      load,
      predict(drawing) {
        // ONNX Runtime runs one session call at a time: each run waits for the one before, and a
        // drawing overtaken by a newer one while it waited is not run at all.
        newest = drawing;
        const turn = queue.then(() => run(drawing));
        queue = turn.catch(() => {});
        return turn;
      },
      async explain(drawing) {   // the run that predicted it explained it too
        return runs.get(drawing).explanation;
      },
    };
  }

  function messageOf(error) {
    return error && error.message ? error.message : String(error);
  }

  // -- asking -------------------------------------------------------------------------------------

  function predictNow() {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    predict();
  }

  function exportDrawing() {   // the drawing at EXPORT_SIZE, whatever the screen: made once per version
    if (exported === null || exported.version !== version) {
      const canvas = document.createElement("canvas");
      canvas.width = canvas.height = EXPORT_SIZE;
      const context = canvas.getContext("2d", { willReadFrequently: inBrowser });
      render(context, EXPORT_SIZE);
      let rgba = null;
      exported = {
        version, askedAt: performance.now(),
        png: () => new Promise((resolve) => canvas.toBlob(resolve, "image/png")),
        rgba: () => (rgba = rgba || context.getImageData(0, 0, EXPORT_SIZE, EXPORT_SIZE).data),
      };
    }
    return exported;
  }

  async function predict() {
    if (!strokes.length) return;
    const drawing = exportDrawing();
    let answer = null, problem = null;
    try {
      answer = await answerer.predict(drawing);
    } catch (error) {
      problem = error.message;
    }
    if ((answer === null && problem === null) || drawing.version < shownVersion) return;  // a newer drawing's turn
    shownVersion = drawing.version;
    if (answer) describeModel(answer.model);
    if (problem) {
      showError(problem);
      showInsideEmpty("Draw a digit to see what each layer makes of it.");
      answered(drawing, null, null);
    } else if (answer.prediction.no_digit) {
      showNoDigit(answer.prediction);
      showInsideEmpty("No digit to look inside.");
      answered(drawing, answer.prediction, null);
    } else {
      showDigit(answer.prediction);
      requestExplanation(drawing, answer.prediction);   // settled once it is shown too
    }
    settle();
  }

  // -- explaining ---------------------------------------------------------------------------------

  function requestExplanation(drawing, prediction) {
    explainWanted = { drawing, prediction };
    if (!explaining) explain();
  }

  async function explain() {
    const { drawing, prediction } = explainWanted;
    explainWanted = null;
    explaining = true;
    inside.dataset.busy = "true";
    let explanation = null, problem = null;
    try {
      explanation = await answerer.explain(drawing);
    } catch (error) {
      problem = error.message;
    }
    if (drawing.version === shownVersion && strokes.length) {   // still the drawing on screen
      if (problem) showInsideEmpty(problem);
      else if (explanation.no_digit) showInsideEmpty("No digit to look inside.");
      else await showInside(explanation);
      answered(drawing, prediction, explanation);
    }
    explaining = false;
    inside.dataset.busy = "false";
    if (explainWanted && explainWanted.drawing.version < shownVersion) explainWanted = null;
    if (explainWanted) explain();   // coalesced: only the newest drawing
    settle();
  }

  function answered(drawing, prediction, explanation) {
    // what the page answered, for its tests and benchmarks: the pixels in (read on demand: the
    // served page has no use for them), the answers, the time from asking to every stage drawn
    window.cnnMnistLast = { version: drawing.version, ms: performance.now() - drawing.askedAt, prediction, explanation,
                            get rgba() { return drawing.rgba(); } };
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

  async function showInside(explanation) {   // resolves once every stage's image is decoded
    inside.dataset.state = "ready";
    insideLede.textContent = "Each stage as the tutorial names it, with its shape. Black is 0; white is the " +
      "stage's largest value, shown under it. Click a conv1 map to see its filter.";
    const input = document.createElement("canvas");
    paint(input, explanation.prepared, grey);
    const figures = [stageFigure("input", "input [batch, 28, 28, 1]", input.toDataURL("image/png"), "0", "255")];
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
    await Promise.all(Array.from(stagesBox.querySelectorAll("img"), (image) => image.decode().catch(() => {})));
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
    paint(filterCanvas, filters.values[index], diverging(filters.max_abs));
    filterCaption.textContent = `conv1 filter ${index} (5x5): red weights add, blue ones subtract. Map ${index} ` +
      "is this filter slid over the input, then ReLU. Scale: ±" + filters.max_abs.toPrecision(2);
  }

  function drawAttribution(attribution) {
    paint(attributionCanvas, attribution.values, diverging(attribution.max_abs));
    attributionCaption.textContent = `Red pixels pushed the answer towards ${attribution.towards}, blue ones ` +
      `towards ${attribution.against}, the runner-up (integrated gradients from a blank image; ±` +
      `${attribution.max_abs.toPrecision(2)} at full colour).`;
  }

  // The one painter: rows of values onto a canvas of their size, a pixel each, coloured by
  // colour(value) -> [r, g, b, a]: the pixels the network saw, the input tile, filters, attribution.
  function paint(canvas, rows, colour) {
    const height = rows.length, width = rows[0].length;
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d");
    const image = context.createImageData(width, height);
    rows.flat().forEach((value, at) => image.data.set(colour(value), 4 * at));
    context.putImageData(image, 0, 0);
  }

  function grey(value) {   // 0-255: black to white
    return [value, value, value, 255];
  }

  function diverging(maxAbs) {   // white at 0, full red at +maxAbs, full blue at -maxAbs
    const scale = maxAbs > 0 ? 1 / maxAbs : 0;
    return (value) => {
      const t = Math.max(-1, Math.min(1, value * scale));
      const fade = Math.round(255 * (1 - Math.abs(t)));
      return t >= 0 ? [255, fade, fade, 255] : [fade, fade, 255, 255];
    };
  }

  function clearCanvas(canvas) {
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  }

  function settle() {   // the whole answer to the newest drawing is on screen, its explanation included
    const idle = timer === null && activePointer === null && !explaining && explainWanted === null;
    result.dataset.settled = String(shownVersion === version && idle);
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
    paint(seen, prepared || BLANK, grey);
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
  answerer.load().then((about) => {
    describeModel(about);
    window.cnnMnistReadyMs = performance.now();  // since navigation began: what the benchmark reports
    document.body.dataset.ready = "true";
  }, (error) => {
    modelInfo.textContent = error.message;
    showError(error.message);
  });
})();
