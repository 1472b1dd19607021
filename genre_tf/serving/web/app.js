// The page of genre_tf.serve: send a chosen or dropped file to /predict and draw the answer with plain elements.
"use strict";

// Colour-blind-friendly hues first (Okabe-Ito, then Tableau); more classes than these get spread hues.
const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000",
  "#9467bd", "#8c564b", "#7f7f7f", "#bcbd22"];
const $ = (id) => document.getElementById(id);

function colour(index) {
  return index < PALETTE.length ? PALETTE[index] : `hsl(${(index * 47) % 360} 55% 50%)`;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text; // text, never HTML: file names come from the user
  return node;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function loadHealth() {
  try {
    const health = await (await fetch("/health")).json();
    $("model").textContent = health.kind === "ensemble"
      ? `ensemble ${health.model} of ${health.members.length} models (` +
        health.members.map((m) => `${m.name}, ${m.kind}, weight ${m.weight.toFixed(2)}`).join("; ") +
        `), ${health.classes.length} genres`
      : `model ${health.model} (${health.kind}), ${health.classes.length} genres`;
    $("limits").textContent =
      `wav, au, flac, ogg or mp3; up to ${health.max_bytes / 1e6} MB and ${health.max_seconds} s of audio`;
  } catch (err) {
    $("model").textContent = "the service does not answer";
  }
}

async function upload(file) {
  const result = $("result");
  result.hidden = true;
  result.dataset.state = "busy";
  setStatus(`analysing ${file.name}\u2026`);
  const form = new FormData();
  form.append("file", file, file.name);
  let response;
  let answer;
  try {
    response = await fetch("/predict", { method: "POST", body: form });
    answer = await response.json();
  } catch (err) {
    result.dataset.state = "error";
    setStatus(`${file.name}: no answer from the service (${err.message})`, true);
    return;
  }
  if (!response.ok) {
    result.dataset.state = "error";
    setStatus(`${file.name}: ${answer.detail}`, true);
    return;
  }
  setStatus("");
  render(answer);
}

function render(answer) {
  $("name").textContent = answer.file || "the upload";
  $("duration").textContent = `${answer.duration.toFixed(1)} s, model ${answer.model}`;
  $("confidence").textContent = answer.genre === "unknown"
    ? `unknown: unlike the music this model learned (score ${answer.unknown.score.toFixed(3)}); ` +
      "the bars are its nearest genres, not an answer"
    : `${answer.genre}, confidence ${answer.confidence.toFixed(2)} (calibrated: of tracks answered this sure, ` +
      `about ${Math.round(100 * answer.confidence)} in 100 are right)`;
  drawBars(answer);
  drawMembers(answer);
  drawStrip(answer);
  drawTags(answer);
  const result = $("result");
  result.dataset.genre = answer.genre;
  result.dataset.state = "done";
  result.hidden = false;
}

// One row per genre, most likely first: name, a bar as wide as the probability, the probability.
function drawBars(answer) {
  const rows = answer.classes.map((genre, i) => ({ genre, i, p: answer.probabilities[i] }));
  rows.sort((a, b) => b.p - a.p);
  $("bars").replaceChildren(...rows.map((row, rank) => {
    const bar = element("div", rank === 0 ? "bar top" : "bar");
    bar.setAttribute("role", "listitem");
    bar.dataset.genre = row.genre;
    bar.dataset.probability = String(row.p);
    const track = element("div", "track");
    const fill = element("div", "fill");
    fill.style.width = `${(100 * row.p).toFixed(2)}%`;
    fill.style.background = colour(row.i);
    track.append(fill);
    bar.append(element("span", "label", row.genre), track, element("span", "value", row.p.toFixed(3)));
    return bar;
  }));
}

// An ensemble's members, one line each: name, kind, weight, and its own top genre with its probability.
function drawMembers(answer) {
  const members = answer.members || [];
  $("members").hidden = members.length === 0;
  $("member-lines").replaceChildren(...members.map((member) => {
    const line = element("li", "member",
      `${member.name} (${member.kind}, weight ${member.weight.toFixed(2)}): ` +
      `${member.genre} ${member.probability.toFixed(3)}`);
    line.dataset.name = member.name;
    line.dataset.genre = member.genre;
    line.dataset.weight = String(member.weight);
    const swatch = element("span", "swatch");
    swatch.style.background = colour(answer.classes.indexOf(member.genre));
    line.prepend(swatch);
    return line;
  }));
}

// One cell per segment, in time order, coloured by its most likely genre; hovering names genre and probability.
// Segments may overlap, so a cell spans from its segment's start to the next one's (the last: to the end).
function drawStrip(answer) {
  const seen = new Set();
  const starts = answer.segments.map((segment) => segment.start);
  $("strip").replaceChildren(...answer.segments.map((segment, k) => {
    const p = segment.probabilities;
    const best = p.indexOf(Math.max(...p));
    seen.add(best);
    const cell = element("div", "cell");
    cell.dataset.genre = answer.classes[best];
    cell.style.background = colour(best);
    const next = k + 1 < starts.length ? starts[k + 1] : Math.max(answer.duration, segment.start + 0.1);
    cell.style.flexGrow = String(next - segment.start);
    const end = segment.start + answer.segment_seconds;
    cell.title = `${segment.start.toFixed(1)}\u2013${end.toFixed(1)} s: ${answer.classes[best]} ${p[best].toFixed(2)}`;
    return cell;
  }));
  const n = answer.segments.length;
  $("strip").classList.toggle("dense", n > 60); // hundreds of cells: no gaps between them
  const whose = answer.segments_of ? `, as ${answer.segments_of} (the heaviest member) sees them` : "";
  $("segment-note").textContent = `${n} segment${n === 1 ? "" : "s"} of ${answer.segment_seconds} s${whose}`;
  $("axis").replaceChildren(element("span", "", "0 s"), element("span", "", `${answer.duration.toFixed(1)} s`));
  $("legend").replaceChildren(...[...seen].sort((a, b) => a - b).map((i) => {
    const item = element("li", "", answer.classes[i]);
    const swatch = element("span", "swatch");
    swatch.style.background = colour(i);
    item.prepend(swatch);
    return item;
  }));
}

function drawTags(answer) {
  const tags = $("tags");
  tags.hidden = !answer.tags;
  if (answer.tags) {
    tags.textContent = "Tags: " + answer.tags.map((t) => `${t.tag} ${t.probability.toFixed(2)}`).join(", ");
  }
}

function listen() {
  const drop = $("drop");
  $("file").addEventListener("change", (event) => {
    if (event.target.files.length) upload(event.target.files[0]);
  });
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) upload(event.dataTransfer.files[0]);
  });
}

listen();
loadHealth();
