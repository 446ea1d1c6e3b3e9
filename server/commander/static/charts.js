// Scrapoxy GUI: a small time-series line chart on <canvas>. Our own code, no library.
//
// new LineChart(canvas, {series: [{label, color}], format: (v) => text})
// chart.draw(times, [values of series 0, values of series 1, ...])   (null = no value)
"use strict";

(function () {
  function niceMax(value) {
    // The smallest 1/2/4/6/8 x 10^n at or above value, so that the grid lines are round.
    if (!(value > 0)) return 1;
    const exponent = Math.floor(Math.log10(value));
    const base = Math.pow(10, exponent);
    // Steps that split into 4 readable ticks (1.5 rather than 1.25).
    for (const step of [1, 2, 4, 6, 8, 10]) {
      if (step * base >= value) return step * base;
    }
    return 10 * base;
  }

  function cssVar(name, fallback) {
    const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  class LineChart {
    constructor(canvas, options) {
      this.canvas = canvas;
      this.series = options.series;
      this.format = options.format || ((v) => String(Math.round(v)));
      this.span = options.span || 300;   // seconds shown
      this.minTop = options.minTop || 1; // the y axis never shows less than this
      this.points = 0;                   // points drawn at the last draw (tests read it)
    }

    draw(times, columns) {
      const canvas = this.canvas;
      const ratio = window.devicePixelRatio || 1;
      const width = canvas.clientWidth || 300;
      const height = canvas.clientHeight || 150;
      if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
        canvas.width = Math.round(width * ratio);
        canvas.height = Math.round(height * ratio);
      }
      const ctx = canvas.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, width, height);

      const text = cssVar("--muted", "#6b7485");
      const grid = cssVar("--border", "#dfe3ea");
      const left = 54, right = 8, top = 18, bottom = 20;
      const plotW = Math.max(10, width - left - right);
      const plotH = Math.max(10, height - top - bottom);
      const end = times.length ? times[times.length - 1] : Date.now() / 1000;
      const start = end - this.span;

      let max = 0;
      columns.forEach((column) => column.forEach((v, i) => {
        if (v !== null && v !== undefined && times[i] >= start && v > max) max = v;
      }));
      const top_value = niceMax(Math.max(max, this.minTop));

      ctx.font = "11px system-ui, sans-serif";
      ctx.lineWidth = 1;
      ctx.textBaseline = "middle";
      for (let i = 0; i <= 4; i++) {
        const y = top + plotH - (plotH * i) / 4;
        ctx.strokeStyle = grid;
        ctx.beginPath();
        ctx.moveTo(left, Math.round(y) + 0.5);
        ctx.lineTo(left + plotW, Math.round(y) + 0.5);
        ctx.stroke();
        ctx.fillStyle = text;
        ctx.textAlign = "right";
        ctx.fillText(this.format((top_value * i) / 4), left - 6, y);
      }
      ctx.textAlign = "left";
      ctx.textBaseline = "alphabetic";
      ctx.fillText("-" + Math.round(this.span / 60) + " min", left, height - 4);
      ctx.textAlign = "right";
      ctx.fillText("now", left + plotW, height - 4);

      const x = (t) => left + ((t - start) / this.span) * plotW;
      const y = (v) => top + plotH - (v / top_value) * plotH;
      let drawn = 0;
      this.series.forEach((serie, s) => {
        const column = columns[s] || [];
        ctx.strokeStyle = serie.color;
        ctx.lineWidth = 1.6;
        ctx.lineJoin = "round";
        ctx.beginPath();
        let pen = false;
        for (let i = 0; i < times.length; i++) {
          const v = column[i];
          if (times[i] < start || v === null || v === undefined) { pen = false; continue; }
          if (pen) ctx.lineTo(x(times[i]), y(v)); else ctx.moveTo(x(times[i]), y(v));
          pen = true;
          drawn++;
        }
        ctx.stroke();
      });
      this.points = drawn;

      // Legend, top right.
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      let lx = left + plotW;
      for (let s = this.series.length - 1; s >= 0; s--) {
        const serie = this.series[s];
        const column = columns[s] || [];
        const last = column.length ? column[column.length - 1] : null;
        const label = serie.label + (last === null || last === undefined ? "" : " " + this.format(last));
        ctx.fillStyle = text;
        ctx.fillText(label, lx, 8);
        const w = ctx.measureText(label).width;
        ctx.fillStyle = serie.color;
        ctx.fillRect(lx - w - 12, 5, 8, 6);
        lx -= w + 22;
      }
    }
  }

  window.ScrapoxyCharts = { LineChart, niceMax };
})();
