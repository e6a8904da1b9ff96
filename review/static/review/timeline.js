// A video's timeline: a time axis with ticks, one lane per label in its class colour, then
// one per tracked object (its bar from its first to its last box, in the track's colour),
// a playhead; clicking it (or Enter/arrows on it) seeks, clicking a track goes to it.
import { colourOf, element } from "./overlay.js";

const WIDTH = 960;
const LEFT = 120;
const AXIS = 26;
const LANE = 20;

// A tick step of 1, 2 or 5 times a power of ten, giving about 8 ticks.
export function tickStep(durationMs) {
  const rough = Math.max(durationMs, 1) / 8;
  const power = 10 ** Math.floor(Math.log10(rough));
  for (const factor of [1, 2, 5, 10]) if (factor * power >= rough) return factor * power;
  return 10 * power;
}

// 0.5 s, 12 s, 1:05, 1:05.5: seconds under a minute, minutes:seconds above.
export function clock(ms) {
  const seconds = Math.max(0, ms) / 1000;
  const tenths = Math.round(seconds * 10) / 10;
  const minutes = Math.floor(tenths / 60);
  const rest = tenths - minutes * 60;
  const shown = Number.isInteger(rest) ? rest.toFixed(0) : rest.toFixed(1);
  if (!minutes) return `${shown} s`;
  return `${minutes}:${rest < 10 ? "0" : ""}${shown}`;
}

// A track's colour: the same as in the annotated video (engine.annotate.track_colour).
export function trackColour(palette, trackId) {
  return palette[(trackId * 5) % palette.length];
}

export class Timeline {
  constructor(svg, { durationMs, intervalMs, lanes, tracks = [], palette, onSeek, onTrack = () => {} }) {
    Object.assign(this, { svg, durationMs: Math.max(durationMs, 1), intervalMs, lanes, palette, onSeek, onTrack });
    this.setTracks(tracks);
    svg.addEventListener("click", (event) => {
      const point = svg.createSVGPoint();
      point.x = event.clientX;
      point.y = event.clientY;
      const x = point.matrixTransform(svg.getScreenCTM().inverse()).x;
      if (x >= LEFT) this.onSeek(this.timeAt(x));
    });
  }

  setTracks(tracks) {
    this.tracks = tracks;
    this.height = AXIS + LANE * Math.max(this.lanes.length + tracks.length, 1) + 4;
    this.svg.setAttribute("viewBox", `0 0 ${WIDTH} ${this.height}`);
    this.draw();
    if (this.svg.dataset.time !== undefined) this.setTime(Number(this.svg.dataset.time));
  }

  x(ms) {
    return LEFT + ((WIDTH - LEFT - 8) * Math.max(0, Math.min(ms, this.durationMs))) / this.durationMs;
  }

  timeAt(x) {
    return ((x - LEFT) / (WIDTH - LEFT - 8)) * this.durationMs;
  }

  draw() {
    const svg = this.svg;
    svg.replaceChildren();
    element("rect", { x: 0, y: 0, width: WIDTH, height: this.height, fill: "#fafafa" }, svg);
    const axis = element("g", { class: "pmr-axis" }, svg);
    element("line", { x1: LEFT, x2: WIDTH - 8, y1: AXIS - 6, y2: AXIS - 6, stroke: "#555" }, axis);
    const step = tickStep(this.durationMs);
    for (let t = 0; t <= this.durationMs + 1e-6; t += step) {
      const x = this.x(t);
      element("line", { x1: x, x2: x, y1: AXIS - 10, y2: this.height, stroke: "#ddd" }, axis);
      const label = element("text", { x, y: 12, "text-anchor": "middle", "font-size": 11, fill: "#333" }, axis);
      label.textContent = clock(t);
      label.classList.add("pmr-tick");
    }
    this.lanes.forEach((lane, index) => {
      const y = AXIS + index * LANE;
      const row = element("g", { class: "pmr-lane" }, svg);
      row.dataset.label = lane.label;
      const name = element("text", { x: LEFT - 6, y: y + 14, "text-anchor": "end", "font-size": 12, fill: "#222" }, row);
      name.textContent = `${lane.label} (${lane.count})`;
      const colour = colourOf(this.palette, lane.class_id);
      for (const [start, end] of lane.segments) {
        const x1 = this.x(start);
        const x2 = Math.max(x1 + 2, this.x(end + this.intervalMs));
        const bar = element("rect", { x: x1, y: y + 3, width: x2 - x1, height: LANE - 6, fill: colour, rx: 2 }, row);
        const title = element("title", {}, bar);
        title.textContent = `${lane.label}: ${clock(start)}–${clock(end)}`;
      }
    });
    this.tracks.forEach((track, index) => {
      const y = AXIS + (this.lanes.length + index) * LANE;
      const row = element("g", { class: "pmr-track" }, svg);
      row.dataset.track = track.track_id;
      const name = element("text", { x: LEFT - 6, y: y + 14, "text-anchor": "end", "font-size": 12, fill: "#222" }, row);
      name.textContent = `${track.label} #${track.track_id}`;
      const x1 = this.x(track.first_ms);
      const x2 = Math.max(x1 + 2, this.x(track.last_ms + this.intervalMs));
      const bar = element("rect", { x: x1, y: y + 3, width: x2 - x1, height: LANE - 6, fill: trackColour(this.palette, track.track_id), rx: 5 }, row);
      const title = element("title", {}, bar);
      title.textContent = `${track.label} #${track.track_id}: ${clock(track.first_ms)}–${clock(track.last_ms)}, ${track.frames} frames`;
      bar.addEventListener("click", (event) => { event.stopPropagation(); this.onTrack(track); });
    });
    this.playhead = element("line", { class: "pmr-playhead", x1: LEFT, x2: LEFT, y1: 0, y2: this.height, stroke: "#c00", "stroke-width": 2 }, svg);
  }

  setTime(ms) {
    const x = this.x(ms);
    this.playhead.setAttribute("x1", x);
    this.playhead.setAttribute("x2", x);
    this.svg.dataset.time = Math.round(ms);
    this.svg.setAttribute("aria-valuenow", Math.round(ms));
    this.svg.setAttribute("aria-valuetext", clock(ms));
  }
}
