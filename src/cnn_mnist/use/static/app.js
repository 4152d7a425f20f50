// The draw-a-digit page: pointer strokes on a canvas, sent as a PNG to POST /v1/predict while
// drawing (at most every PREDICT_EVERY_MS) and at each stroke's end; the newest answer is shown.
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

  // strokes in pad units (0-1 on both axes), so the pad can be redrawn at any size and exported at one
  const strokes = [];
  let current = null;        // the stroke under the pointer
  let activePointer = null;
  let penWidth = PENS.medium;
  let version = 0;           // bumped at every change of the drawing
  let shownVersion = 0;      // the drawing version whose answer is on screen
  let timer = null;

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
  }

  // -- predicting ---------------------------------------------------------------------------------

  function predictNow() {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    predict();
  }

  function exportPng() {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = EXPORT_SIZE;
    render(canvas.getContext("2d"), EXPORT_SIZE);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  }

  async function predict() {
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
  fetch("healthz").then((response) => response.json()).then(describeModel).catch(() => {
    modelInfo.textContent = "The model server did not answer.";
  });
})();
