// The picture and its boxes: an <img> or <video> with an SVG over it in image pixels, label
// chips that do not overlap, zoom and pan, and drawing a new box.
const SVG = "http://www.w3.org/2000/svg";

export function colourOf(palette, classId) {
  return palette[((classId % palette.length) + palette.length) % palette.length];
}

// Black or white, whichever contrasts more (WCAG relative luminance), as engine/annotate.py.
export function textColour(hex) {
  const linear = (c) => { const v = c / 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const [r, g, b] = [1, 3, 5].map((i) => linear(parseInt(hex.slice(i, i + 2), 16)));
  const luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  return (luminance + 0.05) ** 2 > 0.0525 ? "#000000" : "#ffffff";
}

export function element(name, attributes = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

function overlaps(a, b) {
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

// Where each chip goes: above its box, else inside its top edge, else below it; nudged
// down a chip at a time until it overlaps no chip placed before it (best boxes first).
export function placeChips(chips, width, height) {
  const placed = [];
  for (const chip of chips) {
    const x = Math.max(0, Math.min(chip.box[0], width - chip.w));
    const tries = [chip.box[1] - chip.h, chip.box[1], chip.box[3]];
    let spot = null;
    for (const y of tries) {
      const candidate = { x, y, w: chip.w, h: chip.h };
      if (y >= 0 && y + chip.h <= height && !placed.some((p) => overlaps(p, candidate))) {
        spot = candidate;
        break;
      }
    }
    for (let step = 0; !spot && step < 60; step += 1) {
      const y = Math.max(0, chip.box[1] - chip.h) + step * chip.h;
      const candidate = { x, y: Math.min(y, height - chip.h), w: chip.w, h: chip.h };
      if (!placed.some((p) => overlaps(p, candidate))) spot = candidate;
    }
    chip.at = spot || { x, y: Math.max(0, chip.box[1] - chip.h), w: chip.w, h: chip.h };
    placed.push(chip.at);
  }
  return chips;
}

export class Overlay {
  constructor(viewer, stage, svg, { width, height, palette, onSelect, onHover, onDrawn }) {
    Object.assign(this, { viewer, stage, svg, width, height, palette, onSelect, onHover, onDrawn });
    this.zoom = 1;
    this.panX = 0;
    this.panY = 0;
    this.drawing = false;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    this.layer = element("g", { class: "pmr-boxes" }, svg);
    this.draft = element("rect", { class: "pmr-draft", x: 0, y: 0, width: 0, height: 0 }, svg);
    this.font = Math.max(12, Math.min(width, height) / 36);
    this.stroke = Math.max(2, Math.min(width, height) / 250);
    this.fit();
    window.addEventListener("resize", () => this.fit());
    this.bindPointer();
  }

  // The stage's size at zoom 1: the whole picture in the viewer.
  fit() {
    const available = this.viewer.clientWidth || this.width;
    const tall = Math.max(240, window.innerHeight * 0.7);
    this.base = Math.min(available / this.width, tall / this.height);
    this.stage.style.width = `${this.width * this.base}px`;
    this.stage.style.height = `${this.height * this.base}px`;
    this.viewer.style.height = `${this.height * this.base}px`;
    this.apply();
  }

  apply() {
    this.stage.style.transform = `translate(${this.panX}px, ${this.panY}px) scale(${this.zoom})`;
    this.viewer.dataset.zoom = this.zoom.toFixed(3);
  }

  zoomBy(factor, clientX = null, clientY = null) {
    const rect = this.viewer.getBoundingClientRect();
    const cx = clientX === null ? rect.width / 2 : clientX - rect.left;
    const cy = clientY === null ? rect.height / 2 : clientY - rect.top;
    const zoom = Math.max(1, Math.min(16, this.zoom * factor));
    this.panX = cx - ((cx - this.panX) * zoom) / this.zoom;
    this.panY = cy - ((cy - this.panY) * zoom) / this.zoom;
    this.zoom = zoom;
    this.clampPan();
    this.apply();
  }

  reset() {
    this.zoom = 1;
    this.panX = 0;
    this.panY = 0;
    this.apply();
  }

  panBy(dx, dy) {
    this.panX += dx;
    this.panY += dy;
    this.clampPan();
    this.apply();
  }

  clampPan() {
    const w = this.width * this.base;
    const h = this.height * this.base;
    this.panX = Math.min(0, Math.max(w - w * this.zoom, this.panX));
    this.panY = Math.min(0, Math.max(h - h * this.zoom, this.panY));
  }

  toImage(event) {
    const point = this.svg.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    const p = point.matrixTransform(this.svg.getScreenCTM().inverse());
    return { x: Math.max(0, Math.min(this.width, p.x)), y: Math.max(0, Math.min(this.height, p.y)) };
  }

  bindPointer() {
    let drag = null;
    this.viewer.addEventListener("wheel", (event) => {
      event.preventDefault();
      this.zoomBy(event.deltaY < 0 ? 1.25 : 0.8, event.clientX, event.clientY);
    }, { passive: false });
    this.viewer.addEventListener("mousedown", (event) => {
      if (event.button !== 0) return;
      event.preventDefault();
      this.viewer.focus({ preventScroll: true });
      drag = this.drawing
        ? { draw: true, start: this.toImage(event) }
        : { draw: false, x: event.clientX, y: event.clientY, moved: false };
    });
    window.addEventListener("mousemove", (event) => {
      if (!drag) return;
      if (drag.draw) {
        this.showDraft(drag.start, this.toImage(event));
      } else {
        const dx = event.clientX - drag.x;
        const dy = event.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
        drag.x = event.clientX;
        drag.y = event.clientY;
        this.panBy(dx, dy);
      }
    });
    window.addEventListener("mouseup", (event) => {
      if (!drag) return;
      const ended = drag;
      drag = null;
      if (ended.draw) {
        const end = this.toImage(event);
        const box = [Math.min(ended.start.x, end.x), Math.min(ended.start.y, end.y),
          Math.max(ended.start.x, end.x), Math.max(ended.start.y, end.y)].map(Math.round);
        if (box[2] - box[0] >= 2 && box[3] - box[1] >= 2) this.onDrawn(box);
        else this.clearDraft();
      } else if (!ended.moved) {
        const target = event.target.closest && event.target.closest("[data-detection]");
        if (target && this.svg.contains(target)) this.onSelect(Number(target.dataset.detection));
      }
    });
  }

  showDraft(a, b) {
    this.draft.setAttribute("x", Math.min(a.x, b.x));
    this.draft.setAttribute("y", Math.min(a.y, b.y));
    this.draft.setAttribute("width", Math.abs(b.x - a.x));
    this.draft.setAttribute("height", Math.abs(b.y - a.y));
    this.draft.setAttribute("stroke-width", this.stroke);
  }

  clearDraft() {
    this.showDraft({ x: 0, y: 0 }, { x: 0, y: 0 });
  }

  setDrawing(on) {
    this.drawing = on;
    this.viewer.classList.toggle("pmr-drawing", on);
    this.keyDraft = on ? [this.width * 0.375, this.height * 0.375, this.width * 0.625, this.height * 0.625] : null;
    if (on) this.showKeyDraft();
    else this.clearDraft();
  }

  // Drawing by keyboard: arrows move the draft box, Shift+arrows resize it, Enter takes it.
  moveKeyDraft(dx, dy, resize) {
    const box = this.keyDraft;
    const sx = this.width * 0.02 * dx;
    const sy = this.height * 0.02 * dy;
    if (resize) {
      box[2] = Math.max(box[0] + 4, Math.min(this.width, box[2] + sx));
      box[3] = Math.max(box[1] + 4, Math.min(this.height, box[3] + sy));
    } else {
      const w = box[2] - box[0];
      const h = box[3] - box[1];
      box[0] = Math.max(0, Math.min(this.width - w, box[0] + sx));
      box[1] = Math.max(0, Math.min(this.height - h, box[1] + sy));
      box[2] = box[0] + w;
      box[3] = box[1] + h;
    }
    this.showKeyDraft();
  }

  showKeyDraft() {
    const [x1, y1, x2, y2] = this.keyDraft;
    this.showDraft({ x: x1, y: y1 }, { x: x2, y: y2 });
  }

  takeKeyDraft() {
    if (this.keyDraft) this.onDrawn(this.keyDraft.map(Math.round));
  }

  // detections: [{id, label, class_id, confidence, box, review_status, review_label,
  // review_class_id}]; added: [{id, label, class_id, box}].
  render(detections, added, selectedId = null, hoverId = null) {
    this.layer.replaceChildren();
    const chips = [];
    const drawBox = (item, kind) => {
      const relabelled = item.review_status === "relabelled";
      const classId = relabelled ? item.review_class_id : item.class_id;
      const colour = colourOf(this.palette, classId);
      const group = element("g", { class: `pmr-${kind}` }, this.layer);
      if (kind === "box") {
        group.dataset.detection = item.id;
        group.dataset.status = item.review_status;
        if (item.id === selectedId) group.classList.add("pmr-selected");
        else if (selectedId !== null) group.classList.add("pmr-dimmed");
        if (item.id === hoverId) group.classList.add("pmr-hover");
        group.addEventListener("mouseenter", () => this.onHover(item.id));
        group.addEventListener("mouseleave", () => this.onHover(null));
      } else {
        group.dataset.box = item.id;
      }
      const [x1, y1, x2, y2] = item.box;
      const selected = item.id === selectedId && kind === "box";
      element("rect", {
        x: x1, y: y1, width: x2 - x1, height: y2 - y1, fill: "none", stroke: colour,
        "stroke-width": this.stroke * (selected ? 2.5 : kind === "added" ? 1.6 : 1),
        "stroke-dasharray": item.review_status === "rejected" ? `${this.stroke * 3} ${this.stroke * 2}` : "",
      }, group);
      const mark = { confirmed: " ✓", rejected: " ✗" }[item.review_status] || "";
      const name = relabelled ? `${item.review_label} (was ${item.label})` : item.label;
      const text = kind === "added" ? `+ ${item.label}` : `${name} ${item.confidence.toFixed(2)}${mark}`;
      chips.push({ group, colour, text, box: item.box, selected });
    };
    for (const d of detections) drawBox(d, "box");
    for (const b of added) drawBox(b, "added");
    // Measure each chip's text, then place the chips: the selected one first, then best first.
    const pad = this.font * 0.25;
    for (const chip of chips) {
      chip.label = element("text", {
        "font-size": this.font, "font-family": "sans-serif", "dominant-baseline": "hanging",
        fill: textColour(chip.colour),
      }, chip.group);
      chip.label.textContent = chip.text;
      const measured = chip.label.getComputedTextLength ? chip.label.getComputedTextLength() : 0;
      chip.w = (measured || chip.text.length * this.font * 0.6) + 2 * pad;
      chip.h = this.font * 1.25;
    }
    const order = [...chips].sort((a, b) => Number(b.selected) - Number(a.selected));
    placeChips(order, this.width, this.height);
    for (const chip of chips) {
      const back = element("rect", {
        class: "pmr-chip", x: chip.at.x, y: chip.at.y, width: chip.w, height: chip.h,
        fill: chip.colour, rx: pad,
      });
      chip.group.insertBefore(back, chip.label);
      chip.label.setAttribute("x", chip.at.x + pad);
      chip.label.setAttribute("y", chip.at.y + this.font * 0.12);
    }
    return chips.map((c) => c.at);
  }
}
