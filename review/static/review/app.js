// The job page: review by keyboard or mouse without reloading. Every change goes to its
// JSON endpoint (review/actions.py) and the page updates in place; the URL follows the
// frame and the selected detection, so reload and back/forward come back to them.
import { Overlay, colourOf } from "./overlay.js";
import { Timeline, clock, trackColour } from "./timeline.js";

const $ = (selector) => document.querySelector(selector);
const data = JSON.parse($("#pmr-data").textContent);
const csrf = $("#pmr-review input[name=csrfmiddlewaretoken]")?.value || "";
const job = data.job;
const isVideo = job.kind === "video";
const fps = job.fps || 25;

const state = {
  frame: 0,
  detections: [],
  added: [],
  selected: null, // a detection's id
  hover: null,
  minConfidence: 0,
  label: "",
  lastLabel: null,
  undo: [],
  playing: false,
  cache: new Map(), // video frame -> {detections, added}, for drawing over the playing video
  cachedUntil: -1,
};

// --- talking to the server -------------------------------------------------------------
async function getJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (!response.ok) throw new Error(`${response.status} ${url}`);
  return response.json();
}

async function post(url, fields = {}) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { Accept: "application/json", "X-CSRFToken": csrf, "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(fields),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = body.error ? body.error.message : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

function say(message, error = false) {
  const status = $("#pmr-message");
  status.textContent = message;
  status.classList.toggle("pmr-error", error);
}

// --- what is shown -----------------------------------------------------------------------
function visible() {
  return state.detections.filter((d) => d.confidence >= state.minConfidence
    && (!state.label || d.label === state.label || d.review_label === state.label));
}

function selectedDetection() {
  return state.detections.find((d) => d.id === state.selected) || null;
}

const viewer = $("#pmr-viewer");
const overlay = new Overlay(viewer, $("#pmr-stage"), $("#pmr-overlay"), {
  width: job.width || 1, height: job.height || 1, palette: data.palette,
  onSelect: (id) => select(id),
  onHover: (id) => hover(id),
  onDrawn: (box) => askLabel("Label of the new box", state.lastLabel || selectedDetection()?.label || data.names[0])
    .then((label) => (label ? addBox(box, label) : overlay.clearDraft()))
    .finally(() => setDrawing(false)),
});

function render() {
  const shown = visible();
  if (state.selected !== null && !shown.some((d) => d.id === state.selected)) state.selected = null;
  overlay.render(shown, state.added, state.selected, state.hover);
  renderTable(shown);
  $("#pmr-frame-label").textContent = isVideo ? `Frame ${state.frame} (${clock((state.frame * 1000) / fps)})` : "Image";
}

function renderTable(shown) {
  const body = $("#pmr-detections tbody");
  body.replaceChildren();
  for (const d of shown) {
    const row = document.createElement("tr");
    row.dataset.detection = d.id;
    row.className = `pmr-${d.review_status}${d.id === state.selected ? " pmr-selected" : ""}${d.id === state.hover ? " pmr-hover" : ""}`;
    row.tabIndex = -1;
    const swatch = `<span class="pmr-swatch" style="background:${colourOf(data.palette, d.review_class_id ?? d.class_id)}"></span>`;
    const tracked = d.track_id != null ? ` <span class="pmr-track-id" style="border-color:${trackColour(data.palette, d.track_id)}">#${d.track_id}</span>` : "";
    const name = (d.review_status === "relabelled" ? `${d.label} → <strong>${d.review_label}</strong>` : d.label) + tracked;
    const who = d.reviewed_by ? ` by ${d.reviewed_by}` : "";
    row.title = `box ${d.box.map((v) => Math.round(v)).join(", ")}`;
    row.innerHTML = `<td>${swatch}${name}</td><td>${d.confidence.toFixed(3)}</td>`
      + `<td class="pmr-state">${d.review_status}${who}</td>`;
    const actions = document.createElement("td");
    if (data.can_change) {
      for (const [verb, text, symbol] of [["confirm", "Confirm", "✓"], ["reject", "Reject", "✗"], ["relabel", "Relabel", "✎"], ["reset", "Reset", "↺"]]) {
        if (verb === "reset" && d.review_status === "unreviewed") continue;
        const button = document.createElement("button");
        button.type = "button";
        button.className = `button pmr-${verb}`;
        button.textContent = symbol;
        button.title = text;
        button.setAttribute("aria-label", `${text} ${d.label} ${d.confidence.toFixed(2)}`);
        button.addEventListener("click", (event) => { event.stopPropagation(); select(d.id); review(verb); });
        actions.appendChild(button);
      }
    }
    row.appendChild(actions);
    row.addEventListener("mouseenter", () => hover(d.id));
    row.addEventListener("mouseleave", () => hover(null));
    row.addEventListener("click", () => select(d.id));
    body.appendChild(row);
  }
  if (!shown.length) {
    body.innerHTML = `<tr><td colspan="4">No detections${isVideo ? " on this frame" : ""}${state.detections.length ? " above the filters" : ""}.</td></tr>`;
  }
  const added = $("#pmr-added tbody");
  added.replaceChildren();
  for (const b of state.added) {
    const row = document.createElement("tr");
    row.dataset.box = b.id;
    row.innerHTML = `<td>${b.label}</td><td>${b.box.map((v) => Math.round(v)).join(", ")}</td><td>${b.created_by || "?"}</td>`;
    const cell = document.createElement("td");
    if (data.can_change) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "button";
      button.textContent = "Remove";
      button.setAttribute("aria-label", `Remove the added ${b.label} box`);
      button.addEventListener("click", () => removeBox(b));
      cell.appendChild(button);
    }
    row.appendChild(cell);
    added.appendChild(row);
  }
  if (!state.added.length) added.innerHTML = '<tr><td colspan="4">None.</td></tr>';
  renderTrack();
}

// The selected box's track: what it is, and the changes that apply to all of its boxes.
function renderTrack() {
  const panel = $("#pmr-track");
  if (!panel) return;
  const d = selectedDetection();
  const track = d && d.track_id != null ? (data.tracks || []).find((t) => t.track_id === d.track_id) : null;
  panel.hidden = !(d && d.track_id != null);
  if (panel.hidden) return;
  $("#pmr-track-title").textContent = `Track #${d.track_id}: ${d.label}`
    + (track ? `, ${clock(track.first_ms)}–${clock(track.last_ms)}, ${track.frames} frames` : "");
  for (const button of panel.querySelectorAll("button")) button.disabled = !data.can_change;
}

async function trackChanged(message) {
  state.cache.clear();
  state.cachedUntil = -1;
  const fresh = await getJson(data.urls.data);
  data.tracks = fresh.tracks;
  timeline?.setTracks(data.tracks);
  const loaded = await loadFrame(state.frame);
  state.detections = loaded.detections;
  state.added = loaded.added;
  say(message);
  render();
  refreshHistory();
}

async function reviewTrack(verb) {
  const d = selectedDetection();
  if (!d || d.track_id == null || !data.can_change) return;
  let label = null;
  if (verb === "relabel") {
    label = await askLabel(`New label for every box of track #${d.track_id}`, d.review_label || state.lastLabel || d.label);
    if (!label) return;
  }
  try {
    const done = await post(`${data.urls.track}/${d.track_id}/${verb}`, label ? { label } : {});
    if (label) state.lastLabel = label;
    await trackChanged(`${verb} track #${d.track_id}: ${done.boxes} boxes${label ? ` → ${label}` : ""}`);
  } catch (error) {
    say(error.message, true);
  }
}

async function splitTrack() {
  const d = selectedDetection();
  if (!d || d.track_id == null || !data.can_change) return;
  try {
    const made = await post(`${data.urls.track}/${d.track_id}/split`, { frame_index: state.frame });
    await trackChanged(`track #${d.track_id} split at frame ${state.frame}: from here on it is track #${made.track_id}`);
  } catch (error) {
    say(error.message, true);
  }
}

async function mergeTrack() {
  const d = selectedDetection();
  if (!d || d.track_id == null || !data.can_change) return;
  const into = await askTrack(`Merge track #${d.track_id} into track…`, d.track_id);
  if (into === null) return;
  try {
    await post(`${data.urls.track}/${d.track_id}/merge`, { into });
    await trackChanged(`track #${d.track_id} merged into #${into}`);
  } catch (error) {
    say(error.message, true);
  }
}

function hover(id) {
  state.hover = id;
  for (const node of document.querySelectorAll(".pmr-hover")) node.classList.remove("pmr-hover");
  if (id === null) return;
  for (const node of document.querySelectorAll(`[data-detection="${id}"]`)) node.classList.add("pmr-hover");
}

function select(id, { scroll = true } = {}) {
  state.selected = id;
  render();
  remember(false);
  if (scroll && id !== null) document.querySelector(`#pmr-detections tr[data-detection="${id}"]`)?.scrollIntoView({ block: "nearest" });
}

function step(delta) {
  const shown = visible();
  if (!shown.length) return;
  const at = shown.findIndex((d) => d.id === state.selected);
  const next = at < 0 ? (delta > 0 ? 0 : shown.length - 1) : Math.max(0, Math.min(shown.length - 1, at + delta));
  select(shown[next].id);
}

// --- the URL follows the selection -------------------------------------------------------
function remember(push) {
  const params = new URLSearchParams();
  if (isVideo) params.set("frame", state.frame);
  if (state.selected !== null) params.set("detection", state.selected);
  const url = `${location.pathname}${params.toString() ? `?${params}` : ""}`;
  const entry = { frame: state.frame, detection: state.selected };
  if (push) history.pushState(entry, "", url);
  else history.replaceState(entry, "", url);
}

window.addEventListener("popstate", (event) => {
  const entry = event.state || {};
  showFrame(entry.frame ?? 0, { push: false, detection: entry.detection ?? null });
});

// --- review changes ----------------------------------------------------------------------
function applyDetection(updated) {
  const index = state.detections.findIndex((d) => d.id === updated.id);
  if (index >= 0) state.detections[index] = { ...state.detections[index], ...updated };
  const cached = state.cache.get(state.frame);
  if (cached) cached.detections = state.detections;
}

const VERB_OF = { unreviewed: "reset", confirmed: "confirm", rejected: "reject", relabelled: "relabel" };

async function review(verb, { label = null, undoing = false } = {}) {
  const d = selectedDetection();
  if (!d || !data.can_change) return;
  if (verb === "relabel" && label === null) {
    label = await askLabel(`New label for ${d.label} ${d.confidence.toFixed(2)}`, d.review_label || state.lastLabel || d.label);
    if (!label) return;
  }
  const before = { verb: VERB_OF[d.review_status], label: d.review_label };
  try {
    const updated = await post(`${data.urls.detection}/${d.id}/${verb}`, label ? { label } : {});
    applyDetection(updated);
    if (label) state.lastLabel = label;
    if (!undoing) {
      state.undo.push({ text: `${verb} ${d.label}`, run: () => { select(d.id, { scroll: false }); return review(before.verb, { label: before.label, undoing: true }); } });
    }
    say(`${undoing ? "Undone: " : ""}${verb} ${d.label}${label ? ` → ${label}` : ""}`);
    render();
    refreshHistory();
    if (!undoing && (verb === "confirm" || verb === "reject")) step(1);
  } catch (error) {
    say(error.message, true);
  }
}

async function addBox(box, label, { undoing = false } = {}) {
  try {
    const added = await post(data.urls.add_box, { label, x1: box[0], y1: box[1], x2: box[2], y2: box[3], frame_index: state.frame });
    state.added.push(added);
    state.lastLabel = label;
    overlay.clearDraft();
    if (!undoing) state.undo.push({ text: `add ${label}`, run: () => removeBox(added, { undoing: true }) });
    say(`${undoing ? "Undone: " : ""}added ${label}`);
    render();
    refreshHistory();
  } catch (error) {
    say(error.message, true);
  }
}

async function removeBox(box, { undoing = false } = {}) {
  try {
    await post(`${data.urls.add_box}/${box.id}/remove`);
    state.added = state.added.filter((b) => b.id !== box.id);
    if (!undoing) state.undo.push({ text: `remove ${box.label}`, run: () => addBox(box.box, box.label, { undoing: true }) });
    say(`${undoing ? "Undone: " : ""}removed ${box.label}`);
    render();
    refreshHistory();
  } catch (error) {
    say(error.message, true);
  }
}

async function undo() {
  const last = state.undo.pop();
  if (!last) {
    say("Nothing to undo.");
    return;
  }
  await last.run();
}

async function refreshHistory() {
  try {
    const { events } = await getJson(data.urls.history);
    const list = $("#pmr-history");
    list.replaceChildren();
    for (const e of events) {
      const item = document.createElement("li");
      const what = `${e.action}${e.label ? ` ${e.label}` : ""}${e.detection ? ` #${e.detection}` : ""}${e.new_label ? ` → ${e.new_label}` : ""}${e.track ? ` (${e.track})` : ""}`;
      item.textContent = `${new Date(e.at).toLocaleString()} — ${e.user || "?"}: ${what}`;
      list.appendChild(item);
    }
    if (!events.length) list.innerHTML = "<li>No review yet.</li>";
  } catch (error) {
    say(error.message, true);
  }
}

// --- labels by type-ahead ----------------------------------------------------------------
export function bestLabel(names, typed) {
  const wanted = typed.trim().toLowerCase();
  if (!wanted) return null;
  return names.find((n) => n.toLowerCase() === wanted)
    || names.find((n) => n.toLowerCase().startsWith(wanted))
    || names.find((n) => n.toLowerCase().includes(wanted)) || null;
}

// The popover form: a value typed and checked as it is typed (``pick``: the value a text
// names, or null; ``describe``: what the form says of it); Enter takes it, Escape cancels.
function ask(title, initial, { pick, describe, names = true }) {
  const form = $("#pmr-label-form");
  const input = $("#pmr-label-input");
  const match = $("#pmr-label-match");
  $("#pmr-label-title").textContent = title;
  input.value = initial || "";
  if (!names) input.removeAttribute("list");
  form.hidden = false;
  input.focus();
  input.select();
  const show = () => { match.textContent = describe(input.value, pick(input.value)); };
  show();
  return new Promise((resolve) => {
    const done = (value) => {
      form.hidden = true;
      input.setAttribute("list", "pmr-names");
      form.removeEventListener("submit", submit);
      input.removeEventListener("input", show);
      input.removeEventListener("keydown", escape);
      viewer.focus();
      resolve(value);
    };
    const submit = (event) => {
      event.preventDefault();
      const value = pick(input.value);
      if (value !== null) done(value);
      else show();
    };
    const escape = (event) => { if (event.key === "Escape") { event.preventDefault(); done(null); } };
    form.addEventListener("submit", submit);
    input.addEventListener("input", show);
    input.addEventListener("keydown", escape);
  });
}

function askLabel(title, initial) {
  return ask(title, initial, {
    pick: (text) => bestLabel(data.names, text),
    describe: (_, label) => (label ? `→ ${label}` : "no such class"),
  });
}

// A track id other than ``current`` (digits).
function askTrack(title, current) {
  const known = (id) => (data.tracks || []).find((t) => t.track_id === id);
  return ask(title, "", {
    names: false,
    pick: (text) => {
      const id = Number(text);
      return Number.isInteger(id) && id > 0 && id !== current ? id : null;
    },
    describe: (_, id) => (id === null ? "a track number" : (known(id) ? `→ #${id} ${known(id).label}` : `→ #${id}`)),
  });
}

function setDrawing(on) {
  overlay.setDrawing(on && data.can_change);
  $("#pmr-add")?.setAttribute("aria-pressed", String(on && data.can_change));
  if (on) say("Drag over the picture to draw the missed box, or move it with the arrows (Shift: resize) and press Enter; Escape cancels.");
}

// --- frames and the video ----------------------------------------------------------------
const video = $("#pmr-video");
const picture = $("#pmr-picture");

async function loadFrame(frame) {
  if (!state.cache.has(frame)) {
    const answer = await getJson(`${data.urls.frame_data}${frame}`);
    state.cache.set(frame, { detections: answer.detections, added: answer.added });
  }
  return state.cache.get(frame);
}

async function showFrame(frame, { push = true, detection = null } = {}) {
  state.frame = frame;
  if (isVideo) {
    const target = (frame + 0.5) / fps;
    if (Math.abs(video.currentTime - target) > 0.5 / fps) video.currentTime = target;
    timeline?.setTime((frame * 1000) / fps);
  }
  const loaded = await loadFrame(frame);
  if (state.frame !== frame) return; // another frame was asked for meanwhile
  state.detections = loaded.detections;
  state.added = loaded.added;
  state.selected = detection ?? (visible()[0]?.id ?? null);
  render();
  remember(push);
}

function nearestFrame(ms) {
  const frame = Math.floor((ms * fps) / 1000);
  let best = null;
  for (const f of data.frames) if (best === null || Math.abs(f - frame) < Math.abs(best - frame)) best = f;
  const near = best !== null && (Math.abs(best - frame) * 1000) / fps <= (job.frame_interval_ms || 1000 / fps);
  return near ? best : frame;
}

function jump(delta) {
  if (!isVideo) {
    const url = delta > 0 ? data.neighbours.next : data.neighbours.previous;
    if (url) location.assign(url);
    else say(delta > 0 ? "This is the last job with detections." : "This is the first job with detections.");
    return;
  }
  pause();
  const frames = data.frames;
  const next = delta > 0 ? frames.find((f) => f > state.frame) : [...frames].reverse().find((f) => f < state.frame);
  if (next === undefined) say(delta > 0 ? "No later frame has detections." : "No earlier frame has detections.");
  else showFrame(next);
}

// While the video plays, the boxes of the processed frame on screen are drawn from the
// records, fetched a few seconds ahead.
async function prefetch(from) {
  if (state.cachedUntil >= from + fps * 4) return;
  const start = Math.max(from, state.cachedUntil);
  const answer = await getJson(`${data.urls.boxes}?from=${start}&to=${start + Math.ceil(fps * 10)}`);
  const frames = new Map();
  for (const d of answer.detections) (frames.get(d.frame_index) || frames.set(d.frame_index, { detections: [], added: [] }).get(d.frame_index)).detections.push(d);
  for (const b of answer.added) (frames.get(b.frame_index) || frames.set(b.frame_index, { detections: [], added: [] }).get(b.frame_index)).added.push(b);
  for (let f = start; f < answer.to; f += 1) if (!state.cache.has(f)) state.cache.set(f, frames.get(f) || { detections: [], added: [] });
  state.cachedUntil = answer.to;
}

function processedFrameAt(frame) {
  const span = Math.max(1, Math.round(((job.frame_interval_ms || 1000 / fps) * fps) / 1000));
  for (let f = frame; f > frame - span && f >= 0; f -= 1) if (data.frames.includes(f)) return f;
  return null;
}

function tick() {
  if (!state.playing) return;
  const frame = Math.floor(video.currentTime * fps);
  timeline?.setTime(video.currentTime * 1000);
  prefetch(frame).catch(() => {});
  const shown = processedFrameAt(frame);
  const boxes = shown === null ? { detections: [], added: [] } : state.cache.get(shown);
  if (boxes && shown !== state.playingFrame) {
    state.playingFrame = shown;
    state.frame = frame;
    state.detections = boxes.detections;
    state.added = boxes.added;
    state.selected = null;
    render();
  }
  requestAnimationFrame(tick);
}

function play() {
  if (!isVideo || state.playing) return;
  state.playing = true;
  state.cachedUntil = -1;
  video.play().catch((error) => say(`The video cannot play here: ${error.message}`, true));
  $("#pmr-play").textContent = "Pause";
  requestAnimationFrame(tick);
}

function pause() {
  if (!isVideo || !state.playing) return;
  state.playing = false;
  video.pause();
  $("#pmr-play").textContent = "Play";
  showFrame(Math.floor(video.currentTime * fps));
}

let timeline = null;
if (isVideo) {
  timeline = new Timeline($("#pmr-timeline"), {
    durationMs: job.duration_ms || 0, intervalMs: job.frame_interval_ms || 1000 / fps,
    lanes: data.lanes, tracks: data.tracks || [], palette: data.palette,
    onSeek: (ms) => { pause(); showFrame(nearestFrame(ms)); },
    onTrack: async (track) => {
      pause();
      await showFrame(track.first_frame);
      const first = state.detections.find((d) => d.track_id === track.track_id);
      if (first) select(first.id);
    },
  });
  const line = $("#pmr-timeline");
  line.addEventListener("keydown", (event) => {
    const span = Math.max(job.frame_interval_ms || 0, 1000);
    const now = (state.frame * 1000) / fps;
    const to = { ArrowLeft: now - span, ArrowRight: now + span, Home: 0, End: job.duration_ms || 0 }[event.key];
    if (to === undefined) return;
    event.preventDefault();
    event.stopPropagation();
    pause();
    showFrame(nearestFrame(Math.max(0, Math.min(to, job.duration_ms || 0))));
  });
  video.addEventListener("ended", () => pause());
  $("#pmr-play").addEventListener("click", () => (state.playing ? pause() : play()));
  $("#pmr-next").addEventListener("click", () => jump(1));
  $("#pmr-previous").addEventListener("click", () => jump(-1));
} else {
  $("#pmr-next").addEventListener("click", () => jump(1));
  $("#pmr-previous").addEventListener("click", () => jump(-1));
}

// --- the toolbar and the keys ------------------------------------------------------------
$("#pmr-min-confidence").addEventListener("input", (event) => {
  state.minConfidence = Number(event.target.value);
  $("#pmr-min-confidence-value").textContent = state.minConfidence.toFixed(2);
  render();
});
$("#pmr-label-filter").addEventListener("change", (event) => { state.label = event.target.value; render(); });
$("#pmr-zoom-in").addEventListener("click", () => overlay.zoomBy(1.25));
$("#pmr-zoom-out").addEventListener("click", () => overlay.zoomBy(0.8));
$("#pmr-zoom-fit").addEventListener("click", () => overlay.reset());
$("#pmr-add")?.addEventListener("click", () => setDrawing(!overlay.drawing));
$("#pmr-help-button").addEventListener("click", () => toggleHelp());
for (const [id, run] of [["#pmr-track-confirm", () => reviewTrack("confirm")], ["#pmr-track-reject", () => reviewTrack("reject")],
  ["#pmr-track-relabel", () => reviewTrack("relabel")], ["#pmr-track-split", () => splitTrack()], ["#pmr-track-merge", () => mergeTrack()]]) {
  $(id)?.addEventListener("click", run);
}
$("#pmr-mark-reviewed")?.addEventListener("click", async () => {
  try {
    const mark = await post(data.urls.mark_reviewed);
    $("#pmr-reviewed").textContent = `reviewed by ${mark.reviewed_by} on ${new Date(mark.reviewed_at).toLocaleString()}`;
    say("Marked reviewed.");
    refreshHistory();
  } catch (error) {
    say(error.message, true);
  }
});

function toggleHelp(force = null) {
  const help = $("#pmr-help");
  const open = force === null ? !help.open : force;
  if (open && !help.open) help.showModal();
  if (!open && help.open) help.close();
}

const KEYS = {
  j: () => step(1),
  k: () => step(-1),
  c: () => review("confirm"),
  x: () => review("reject"),
  r: () => review("relabel"),
  C: () => reviewTrack("confirm"),
  X: () => reviewTrack("reject"),
  R: () => reviewTrack("relabel"),
  s: () => splitTrack(),
  m: () => mergeTrack(),
  u: () => undo(),
  a: () => setDrawing(!overlay.drawing),
  n: () => jump(1),
  p: () => jump(-1),
  "+": () => overlay.zoomBy(1.25),
  "=": () => overlay.zoomBy(1.25),
  "-": () => overlay.zoomBy(0.8),
  0: () => overlay.reset(),
  " ": () => (state.playing ? pause() : play()),
  "?": () => toggleHelp(),
  ArrowLeft: () => overlay.panBy(60, 0),
  ArrowRight: () => overlay.panBy(-60, 0),
  ArrowUp: () => overlay.panBy(0, 60),
  ArrowDown: () => overlay.panBy(0, -60),
};

document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const typing = event.target.closest && event.target.closest("input, select, textarea, [contenteditable]");
  if (typing) return;
  if (event.key === "Escape") {
    if (overlay.drawing) setDrawing(false);
    toggleHelp(false);
    return;
  }
  if ($("#pmr-help").open && event.key !== "?") return;
  if (overlay.drawing && overlay.keyDraft) {
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (arrows[event.key]) {
      event.preventDefault();
      overlay.moveKeyDraft(...arrows[event.key], event.shiftKey);
      return;
    }
    if (event.key === "Enter") {
      event.preventDefault();
      overlay.takeKeyDraft();
      return;
    }
  }
  const action = KEYS[event.key];
  if (!action) return;
  if (event.key === " " && !isVideo) return;
  if (event.target.closest && event.target.closest("button, a") && (event.key === " ")) return;
  event.preventDefault();
  action();
});

// --- start -------------------------------------------------------------------------------
(function start() {
  const initial = JSON.parse($("#pmr-frame").textContent);
  state.frame = initial.frame;
  state.cache.set(initial.frame, { detections: initial.detections, added: initial.added });
  const params = new URLSearchParams(location.search);
  const wanted = Number(params.get("detection"));
  state.detections = initial.detections;
  state.added = initial.added;
  state.selected = initial.detections.some((d) => d.id === wanted) ? wanted : (visible()[0]?.id ?? null);
  if (isVideo) {
    video.addEventListener("loadedmetadata", () => { video.currentTime = (state.frame + 0.5) / fps; }, { once: true });
    timeline.setTime((state.frame * 1000) / fps);
  } else if (picture && !picture.complete) {
    picture.addEventListener("load", () => overlay.fit(), { once: true });
  }
  render();
  remember(false);
  document.body.dataset.pmrReady = "true";
}());
