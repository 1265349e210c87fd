// The piano roll: one colour per instrument on a shared pitch axis, drums as short hits,
// a time ruler in seconds (and in bars, with faint bar and beat lines, when the MIDI file's
// tempo was estimated), zoom and horizontal scroll. The canvas only ever covers the visible
// window (a spacer gives the scroller its width), so a long task never needs a huge canvas.

export const PALETTE = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7b83", "#bc4c00"];
const GUTTER = 44; // left strip with the octave labels, px
const SECONDS_RULER = 22; // strip with the ruler in seconds, px
const BARS_RULER = 18; // strip above it with the bar numbers, when there are bars, px
const PAD = 16; // room after the last note, px
const MAX_PPS = 2000; // most pixels per second when zoomed in
const BLACK_KEYS = new Set([1, 3, 6, 8, 10]);
const RULER_STEPS = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300];

export class PianoRoll {
  /** Draws `doc` (the notes document of the API) into `canvas`, inside `scroller`. */
  constructor(canvas, scroller, spacer, doc) {
    this.canvas = canvas;
    this.scroller = scroller;
    this.spacer = spacer;
    this.instruments = doc.instruments.map((instrument, index) => ({
      ...instrument,
      color: PALETTE[index % PALETTE.length],
      visible: true,
    }));
    // A loop, not Math.min(...all): a long task's notes would overflow the call stack.
    let [low, high, end] = [60, 71, doc.duration_seconds || 0.5];
    for (const [pitch, , noteEnd] of doc.instruments.flatMap((i) => i.notes)) {
      [low, high, end] = [Math.min(low, pitch), Math.max(high, pitch), Math.max(end, noteEnd)];
    }
    this.duration = end;
    // [seconds, beats in the bar] of each bar, from the file's tempo map (empty without one).
    this.bars = doc.tempo?.bars ?? [];
    this.ruler = SECONDS_RULER + (this.bars.length ? BARS_RULER : 0);
    canvas.dataset.bars = String(this.bars.length);
    this.low = Math.max(0, low - 2);
    this.high = Math.min(127, high + 2);
    this.cursor = 0;
    this.pps = 0;
    this.pending = false;
    scroller.addEventListener("scroll", () => this.requestDraw());
    scroller.addEventListener("wheel", (event) => this.onWheel(event), { passive: false });
    new ResizeObserver(() => this.layout()).observe(scroller);
    this.layout();
    this.fit();
  }

  get viewWidth() {
    return Math.max(200, this.scroller.clientWidth);
  }

  /** Sizes the canvas to the scroller's width and the pitch range, sharp on any display. */
  layout() {
    const rows = this.high - this.low + 1;
    this.rowHeight = Math.max(4, Math.min(14, Math.floor(360 / rows)));
    const width = this.viewWidth;
    const height = this.ruler + rows * this.rowHeight;
    const ratio = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(height * ratio);
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    this.setScale(this.pps || this.fitPps());
  }

  fitPps() {
    return (this.viewWidth - GUTTER - PAD) / this.duration;
  }

  /** Sets pixels per second, keeping the time under `anchorX` (canvas px) in place. */
  setScale(pps, anchorX = GUTTER) {
    const time = this.timeAtX(anchorX);
    this.pps = Math.min(MAX_PPS, Math.max(this.fitPps(), pps));
    const content = GUTTER + this.duration * this.pps + PAD;
    this.spacer.style.width = `${Math.max(0, content - this.viewWidth)}px`;
    this.scroller.scrollLeft = Math.max(0, time * this.pps - (anchorX - GUTTER));
    this.requestDraw();
  }

  fit() {
    this.setScale(this.fitPps());
  }

  zoom(factor, anchorX = GUTTER + (this.viewWidth - GUTTER) / 2) {
    this.setScale(this.pps * factor, anchorX);
  }

  onWheel(event) {
    if (!event.ctrlKey) return; // plain wheel: the scroller scrolls as usual
    event.preventDefault();
    const x = event.clientX - this.canvas.getBoundingClientRect().left;
    this.zoom(event.deltaY < 0 ? 1.25 : 0.8, Math.max(GUTTER, x));
  }

  /** Seconds at canvas x (px from the canvas' left edge). */
  timeAtX(x) {
    if (!this.pps) return 0;
    return Math.max(0, (x - GUTTER + this.scroller.scrollLeft) / this.pps);
  }

  setVisible(index, visible) {
    this.instruments[index].visible = visible;
    this.requestDraw();
  }

  /** Moves the cursor; with `follow`, scrolls so that it stays in view. */
  setCursor(seconds, follow = false) {
    this.cursor = seconds;
    this.canvas.dataset.cursorSeconds = seconds.toFixed(3);
    if (follow) {
      const x = GUTTER + seconds * this.pps - this.scroller.scrollLeft;
      if (x < GUTTER || x > this.viewWidth - PAD) {
        this.scroller.scrollLeft = Math.max(0, seconds * this.pps - (this.viewWidth - GUTTER) * 0.1);
      }
    }
    this.requestDraw();
  }

  requestDraw() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const began = performance.now();
    const ctx = this.canvas.getContext("2d");
    const ratio = this.canvas.width / this.viewWidth;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, this.viewWidth, this.canvas.height / ratio);
    this.drawRows(ctx);
    this.drawBarLines(ctx);
    this.drawRuler(ctx);
    this.drawBars(ctx);
    ctx.save();
    ctx.beginPath();
    ctx.rect(GUTTER, this.ruler, this.viewWidth - GUTTER, this.canvas.height / ratio - this.ruler);
    ctx.clip();
    const drawn = this.drawNotes(ctx);
    this.drawCursor(ctx);
    ctx.restore();
    this.canvas.dataset.notesDrawn = String(drawn);
    // How long this drawing took, and how many there were, for the benchmark (bench/console).
    this.canvas.dataset.drawMs = (performance.now() - began).toFixed(2);
    this.canvas.dataset.draws = String(Number(this.canvas.dataset.draws || 0) + 1);
  }

  rowY(pitch) {
    return this.ruler + (this.high - pitch) * this.rowHeight;
  }

  xOf(seconds) {
    return GUTTER + seconds * this.pps - this.scroller.scrollLeft;
  }

  drawRows(ctx) {
    for (let pitch = this.low; pitch <= this.high; pitch += 1) {
      ctx.fillStyle = BLACK_KEYS.has(pitch % 12) ? "#eef1f4" : "#ffffff";
      ctx.fillRect(GUTTER, this.rowY(pitch), this.viewWidth, this.rowHeight);
    }
    ctx.fillStyle = "#f6f8fa";
    ctx.fillRect(0, this.ruler, GUTTER, this.canvas.height);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "bottom";
    for (let pitch = this.low; pitch <= this.high; pitch += 1) {
      if (pitch % 12 !== 0) continue;
      if (this.rowY(pitch) + this.rowHeight - 12 < this.ruler) continue; // no room under the ruler
      const y = this.rowY(pitch) + this.rowHeight; // the bottom edge of the C row
      ctx.fillStyle = "#b6bec8";
      ctx.fillRect(0, y - 1, this.viewWidth, 1);
      ctx.fillStyle = "#424a53";
      ctx.fillText(`C${pitch / 12 - 1}`, 6, y - 2);
    }
    ctx.fillStyle = "#d0d7de";
    ctx.fillRect(GUTTER - 1, this.ruler, 1, this.canvas.height);
  }

  /** The visible bars: [index, seconds, beats, end seconds] of each bar in the window. */
  visibleBars() {
    const left = this.timeAtX(GUTTER);
    const right = this.timeAtX(this.viewWidth);
    const shown = [];
    for (let index = 0; index < this.bars.length; index += 1) {
      const [start, beats] = this.bars[index];
      const end = index + 1 < this.bars.length ? this.bars[index + 1][0] : this.duration;
      if (start > right) break;
      if (end >= left) shown.push([index, start, beats, end]);
    }
    return shown;
  }

  /** Faint lines across the rows: every beat, darker on each bar (beats split a bar evenly). */
  drawBarLines(ctx) {
    const top = this.ruler;
    const height = this.canvas.height;
    for (const [, start, beats, end] of this.visibleBars()) {
      const beatWidth = ((end - start) / beats) * this.pps;
      for (let beat = 0; beat < beats; beat += 1) {
        const x = this.xOf(start) + beat * beatWidth;
        if (x < GUTTER || (beat > 0 && beatWidth < 6)) continue;
        ctx.fillStyle = beat === 0 ? "#c4ccd5" : "#e4e8ec";
        ctx.fillRect(x, top, 1, height);
      }
    }
  }

  /** The bar numbers (1-based, as a DAW counts them), in their strip above the seconds. */
  drawBars(ctx) {
    if (!this.bars.length) return;
    ctx.fillStyle = "#eef1f4";
    ctx.fillRect(0, 0, this.viewWidth, BARS_RULER);
    ctx.fillStyle = "#424a53";
    ctx.textBaseline = "top";
    let lastLabel = -Infinity;
    let drawn = 0;
    for (const [index, start] of this.visibleBars()) {
      const x = this.xOf(start);
      if (x < GUTTER) continue;
      ctx.fillRect(x, 0, 1, BARS_RULER);
      drawn += 1;
      if (x - lastLabel < 28) continue; // numbers would overlap: label fewer bars
      ctx.fillText(String(index + 1), x + 3, 3);
      lastLabel = x;
    }
    ctx.fillRect(0, BARS_RULER - 1, this.viewWidth, 1);
    this.canvas.dataset.barsDrawn = String(drawn);
  }

  drawRuler(ctx) {
    const top = this.ruler - SECONDS_RULER;
    ctx.fillStyle = "#f6f8fa";
    ctx.fillRect(0, top, this.viewWidth, SECONDS_RULER);
    const step = RULER_STEPS.find((s) => s * this.pps >= 64) ?? RULER_STEPS.at(-1);
    const first = Math.floor(this.timeAtX(GUTTER) / step) * step;
    const last = this.timeAtX(this.viewWidth);
    ctx.fillStyle = "#424a53";
    ctx.textBaseline = "top";
    for (let t = first; t <= last; t += step) {
      const x = this.xOf(t);
      if (x < GUTTER) continue;
      ctx.fillRect(x, this.ruler - 6, 1, 6);
      ctx.fillText(`${+t.toFixed(2)}s`, x + 3, top + 4);
    }
    ctx.fillRect(0, this.ruler - 1, this.viewWidth, 1);
  }

  /** Draws the notes of the visible instruments inside the window; returns how many. */
  drawNotes(ctx) {
    let drawn = 0;
    const left = this.timeAtX(GUTTER);
    const right = this.timeAtX(this.viewWidth);
    for (const instrument of this.instruments) {
      if (!instrument.visible) continue;
      ctx.fillStyle = instrument.color;
      for (const [pitch, start, end, velocity] of instrument.notes) {
        if (start > right || (instrument.is_drum ? start : end) < left) continue;
        ctx.globalAlpha = 0.45 + 0.55 * velocity;
        const y = this.rowY(pitch);
        if (instrument.is_drum) {
          ctx.fillRect(this.xOf(start) - 2, y - 2, 4, this.rowHeight + 4); // a hit, not a bar
        } else {
          const width = Math.max(2, (end - start) * this.pps - 1);
          ctx.fillRect(this.xOf(start), y + 1, width, this.rowHeight - 2);
        }
        drawn += 1;
      }
    }
    ctx.globalAlpha = 1;
    return drawn;
  }

  drawCursor(ctx) {
    ctx.fillStyle = "#cf222e";
    ctx.fillRect(this.xOf(this.cursor) - 1, this.ruler, 2, this.canvas.height);
  }
}
