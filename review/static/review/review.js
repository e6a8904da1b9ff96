// Draw a missed box by dragging on the picture: fills the "add box" form's coordinates
// (in image pixels). Typing the coordinates works without this script.
document.addEventListener("DOMContentLoaded", () => {
  const svg = document.getElementById("pmr-overlay");
  const form = document.getElementById("pmr-add-box");
  const draft = document.getElementById("pmr-draft");
  if (!svg || !form || !draft) return;
  const toImage = (event) => {
    const point = svg.createSVGPoint();
    point.x = event.clientX;
    point.y = event.clientY;
    const p = point.matrixTransform(svg.getScreenCTM().inverse());
    const w = Number(svg.dataset.width), h = Number(svg.dataset.height);
    return { x: Math.max(0, Math.min(w, p.x)), y: Math.max(0, Math.min(h, p.y)) };
  };
  let start = null;
  const show = (a, b) => {
    draft.setAttribute("x", Math.min(a.x, b.x));
    draft.setAttribute("y", Math.min(a.y, b.y));
    draft.setAttribute("width", Math.abs(b.x - a.x));
    draft.setAttribute("height", Math.abs(b.y - a.y));
  };
  svg.addEventListener("mousedown", (event) => { start = toImage(event); event.preventDefault(); });
  svg.addEventListener("mousemove", (event) => { if (start) show(start, toImage(event)); });
  window.addEventListener("mouseup", (event) => {
    if (!start) return;
    const end = toImage(event);
    show(start, end);
    form.elements.x1.value = Math.round(Math.min(start.x, end.x));
    form.elements.y1.value = Math.round(Math.min(start.y, end.y));
    form.elements.x2.value = Math.round(Math.max(start.x, end.x));
    form.elements.y2.value = Math.round(Math.max(start.y, end.y));
    start = null;
  });
});
