// The 2D slice panels of the study view (no WebGL): what the reader sees and works with, first at
// the preview level, then at full resolution; NiiVue replaces them only when the reader asks.
//
// NiiVue needs WebGL: with software GL (SwiftShader) its start-up, shader compilation and the
// upload of a 256^3 volume block the page for seconds. These panels need none of it: the display
// copies (neurorad/server/web/display.py; the preview at most 128 voxels a side) are fetched,
// gunzipped by the browser's native DecompressionStream (in chunks, the page stays responsive),
// parsed as NIfTI-1 (header fields of the NIfTI-1 standard: dim, datatype, vox_offset,
// scl_slope/scl_inter, sform/qform) and one slice per panel is resampled in world millimetres onto
// a 2D canvas (nearest neighbour, a few milliseconds), with the label overlay blended by the same
// colour table as NiiVue's.
//
// Display convention (the same as the NiiVue panels): radiological, patient right on screen left;
// axial and coronal with anterior/superior up, sagittal with anterior on the right. Positions are
// RAS+ millimetres (NIfTI's world space), so these panels and NiiVue share the crosshair.

const DTYPES = {
  2: Uint8Array, 4: Int16Array, 8: Int32Array, 16: Float32Array, 64: Float64Array,
  256: Int8Array, 512: Uint16Array, 768: Uint32Array,
};

async function gunzipIfNeeded(buf) {
  const b = new Uint8Array(buf);
  if (b.length < 2 || b[0] !== 0x1f || b[1] !== 0x8b) return buf;
  const stream = new Blob([buf]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Response(stream).arrayBuffer();
}

function qformMatrix(dv) {
  // NIfTI-1 method 2: quaternion (b, c, d), qfac = pixdim[0], offsets
  const f = (o) => dv.getFloat32(o, true);
  const [b, c, d] = [f(256), f(260), f(264)];
  const a = Math.sqrt(Math.max(0, 1 - (b * b + c * c + d * d)));
  const qfac = f(76) < 0 ? -1 : 1;
  const [dx, dy, dz] = [f(80), f(84), f(88) * qfac];
  const R = [
    [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
    [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
    [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
  ];
  const off = [f(268), f(272), f(276)];
  return R.map((row, i) => [row[0] * dx, row[1] * dy, row[2] * dz, off[i]]);
}

/** A NIfTI-1 volume (3D; a 4D file gives its first volume) from the bytes of a .nii or .nii.gz. */
export async function parseNifti(buf) {
  const raw = await gunzipIfNeeded(buf);
  const dv = new DataView(raw);
  if (dv.getInt32(0, true) !== 348) throw new Error("not a little-endian NIfTI-1 file");
  const dims = [1, 2, 3].map((i) => Math.max(1, dv.getInt16(40 + 2 * i, true)));
  const dtype = dv.getInt16(70, true);
  const Arr = DTYPES[dtype];
  if (!Arr) throw new Error(`NIfTI datatype ${dtype} not supported by the preview`);
  const offset = Math.max(352, Math.round(dv.getFloat32(108, true)));
  const n = dims[0] * dims[1] * dims[2];
  const data = new Arr(raw.slice(offset, offset + n * Arr.BYTES_PER_ELEMENT));
  let slope = dv.getFloat32(112, true);
  let inter = dv.getFloat32(116, true);
  if (!Number.isFinite(slope) || slope === 0) [slope, inter] = [1, 0];
  if (!Number.isFinite(inter)) inter = 0;
  let A;
  if (dv.getInt16(254, true) > 0) {
    A = [0, 1, 2].map((r) => [0, 1, 2, 3].map((c) => dv.getFloat32(280 + 16 * r + 4 * c, true)));
  } else if (dv.getInt16(252, true) > 0) {
    A = qformMatrix(dv);
  } else {
    A = [0, 1, 2].map((r) => [0, 1, 2, 3].map((c) => (c === r ? dv.getFloat32(80 + 4 * r, true) : 0)));
  }
  return { dims, data, slope, inter, A, inv: invert(A) };
}

function invert(A) {
  // inverse of the 4x4 [A; 0 0 0 1] as 3x4
  const [a, b, c] = A;
  const m = [[a[0], a[1], a[2]], [b[0], b[1], b[2]], [c[0], c[1], c[2]]];
  const det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0]) +
    m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
  const inv = [
    [(m[1][1] * m[2][2] - m[1][2] * m[2][1]) / det, (m[0][2] * m[2][1] - m[0][1] * m[2][2]) / det,
      (m[0][1] * m[1][2] - m[0][2] * m[1][1]) / det],
    [(m[1][2] * m[2][0] - m[1][0] * m[2][2]) / det, (m[0][0] * m[2][2] - m[0][2] * m[2][0]) / det,
      (m[0][2] * m[1][0] - m[0][0] * m[1][2]) / det],
    [(m[1][0] * m[2][1] - m[1][1] * m[2][0]) / det, (m[0][1] * m[2][0] - m[0][0] * m[2][1]) / det,
      (m[0][0] * m[1][1] - m[0][1] * m[1][0]) / det],
  ];
  const t = [A[0][3], A[1][3], A[2][3]];
  return inv.map((row) => [...row, -(row[0] * t[0] + row[1] * t[1] + row[2] * t[2])]);
}

export function mmToVox(vol, mm) {
  return vol.inv.map((r) => r[0] * mm[0] + r[1] * mm[1] + r[2] * mm[2] + r[3]);
}

function voxToMm(vol, v) {
  return vol.A.map((r) => r[0] * v[0] + r[1] * v[1] + r[2] * v[2] + r[3]);
}

/** Smallest voxel side (mm): the preview's sampling step and its slice step. */
export function voxelStepMm(vol) {
  return Math.min(...[0, 1, 2].map((c) => Math.hypot(vol.A[0][c], vol.A[1][c], vol.A[2][c])));
}

/** World bounding box [[min x,y,z], [max x,y,z]] of the voxel centres. */
export function boundsMm(vol) {
  const lo = [Infinity, Infinity, Infinity];
  const hi = [-Infinity, -Infinity, -Infinity];
  for (let c = 0; c < 8; c++) {
    const v = [0, 1, 2].map((i) => ((c >> i) & 1 ? vol.dims[i] - 1 : 0));
    const p = voxToMm(vol, v);
    for (let i = 0; i < 3; i++) {
      lo[i] = Math.min(lo[i], p[i]);
      hi[i] = Math.max(hi[i], p[i]);
    }
  }
  return [lo, hi];
}

/** Robust display window of an intensity volume: 2nd and 98th percentile of its non-zero voxels. */
export function robustWindow(vol) {
  const { data, slope, inter } = vol;
  let lo = Infinity;
  let hi = -Infinity;
  const stride = Math.max(1, Math.floor(data.length / 200000));
  const sample = [];
  for (let i = 0; i < data.length; i += stride) {
    const v = data[i] * slope + inter;
    if (v !== 0 && Number.isFinite(v)) sample.push(v);
  }
  if (!sample.length) return [0, 1];
  sample.sort((a, b) => a - b);
  lo = sample[Math.floor(0.02 * (sample.length - 1))];
  hi = sample[Math.floor(0.98 * (sample.length - 1))];
  return hi > lo ? [lo, hi] : [sample[0], sample[sample.length - 1] + 1e-6];
}

// Per plane: the world axis shown horizontally (with its direction: +1 means the axis grows to the
// screen right), vertically (+1: grows downwards) and the normal axis.
export const PLANE_GEOMETRY = {
  axial: { h: [0, -1], v: [1, -1], n: 2 },
  coronal: { h: [0, -1], v: [2, -1], n: 1 },
  sagittal: { h: [1, 1], v: [2, -1], n: 0 },
};

/**
 * One panel's 2D view. ``background``: the intensity volume; ``overlay``: a label volume or null.
 * ``render(state)`` draws the slice through ``state.mm`` in ``state.plane`` with
 * ``state.window`` and the overlay colour table ``state.lut`` ({R,G,B,A} per label) at ``state.opacity``.
 */
export class SlicePanel {
  constructor(canvas, background, overlay) {
    this.canvas = canvas;
    this.bg = background;
    this.ov = overlay;
    this.bounds = boundsMm(background);
    this.step = voxelStepMm(background);
    this.view = null; // {plane, scale, ox, oy, h0, v0}
    this.off = document.createElement("canvas");
  }

  /** Show other volumes of the same images (e.g. the full-resolution copies after the preview). */
  setVolumes(background, overlay) {
    this.bg = background;
    this.ov = overlay;
    this.bounds = boundsMm(background);
    this.step = voxelStepMm(background);
  }

  geometry(plane) {
    return PLANE_GEOMETRY[plane] ?? PLANE_GEOMETRY.axial;
  }

  render(state) {
    const g = this.geometry(state.plane);
    const [lo, hi] = this.bounds;
    const step = this.step;
    const [hAxis, hDir] = g.h;
    const [vAxis, vDir] = g.v;
    const W = Math.max(1, Math.round((hi[hAxis] - lo[hAxis]) / step) + 1);
    const H = Math.max(1, Math.round((hi[vAxis] - lo[vAxis]) / step) + 1);
    // world value of pixel column 0 / row 0 and the step per pixel
    const h0 = hDir > 0 ? lo[hAxis] : hi[hAxis];
    const v0 = vDir > 0 ? lo[vAxis] : hi[vAxis];
    const img = new ImageData(W, H);
    const px = img.data;
    const [wlo, whi] = state.window;
    const scale = 255 / Math.max(1e-12, whi - wlo);
    const vols = [this.bg, this.ov].filter(Boolean);
    // voxel coordinate = base + x * dx + y * dy (linear in the pixel position)
    const plan = vols.map((vol) => {
      const mm = [0, 0, 0];
      mm[g.n] = state.mm[g.n];
      mm[hAxis] = h0;
      mm[vAxis] = v0;
      const base = mmToVox(vol, mm);
      const col = (axis, d) => vol.inv.map((r) => r[axis] * d * step);
      return { vol, base, dx: col(hAxis, hDir), dy: col(vAxis, vDir) };
    });
    const lut = state.lut;
    const alpha = state.opacity;
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const o = 4 * (y * W + x);
        let grey = 0;
        const b = plan[0];
        const i = Math.round(b.base[0] + x * b.dx[0] + y * b.dy[0]);
        const j = Math.round(b.base[1] + x * b.dx[1] + y * b.dy[1]);
        const k = Math.round(b.base[2] + x * b.dx[2] + y * b.dy[2]);
        const d = b.vol.dims;
        if (i >= 0 && j >= 0 && k >= 0 && i < d[0] && j < d[1] && k < d[2]) {
          const v = b.vol.data[i + d[0] * (j + d[1] * k)] * b.vol.slope + b.vol.inter;
          grey = Math.min(255, Math.max(0, (v - wlo) * scale));
        }
        let r = grey;
        let gg = grey;
        let bb = grey;
        if (plan.length > 1 && lut) {
          const p = plan[1];
          const pd = p.vol.dims;
          const pi = Math.round(p.base[0] + x * p.dx[0] + y * p.dy[0]);
          const pj = Math.round(p.base[1] + x * p.dx[1] + y * p.dy[1]);
          const pk = Math.round(p.base[2] + x * p.dx[2] + y * p.dy[2]);
          if (pi >= 0 && pj >= 0 && pk >= 0 && pi < pd[0] && pj < pd[1] && pk < pd[2]) {
            const lab = Math.round(p.vol.data[pi + pd[0] * (pj + pd[1] * pk)] * p.vol.slope + p.vol.inter);
            const a = lab > 0 && lab < lut.A.length ? (lut.A[lab] / 255) * alpha : 0;
            if (a > 0) {
              r = r * (1 - a) + lut.R[lab] * a;
              gg = gg * (1 - a) + lut.G[lab] * a;
              bb = bb * (1 - a) + lut.B[lab] * a;
            }
          }
        }
        px[o] = r;
        px[o + 1] = gg;
        px[o + 2] = bb;
        px[o + 3] = 255;
      }
    }
    this.off.width = W;
    this.off.height = H;
    this.off.getContext("2d").putImageData(img, 0, 0);
    const cw = this.canvas.clientWidth || 1;
    const ch = this.canvas.clientHeight || 1;
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(cw * dpr);
    this.canvas.height = Math.round(ch * dpr);
    const fit = Math.min(cw / W, ch / H);
    const ox = (cw - W * fit) / 2;
    const oy = (ch - H * fit) / 2;
    this.view = { g, fit, ox, oy, h0, v0, step };
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, cw, ch);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(this.off, ox, oy, W * fit, H * fit);
    // crosshair with a gap around the centre (a small finding under it stays visible)
    const cc = this.mmToCss(state.mm);
    if (cc) {
      // on pixel centres: a 1-pixel line between two pixels would be drawn as two half-tone ones
      const c = cc.map((v) => Math.floor(v) + 0.5);
      const gap = 8;
      ctx.strokeStyle = "rgb(51, 153, 255)"; // NiiVue's crosshair colour
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(ox, c[1]);
      ctx.lineTo(c[0] - gap, c[1]);
      ctx.moveTo(c[0] + gap, c[1]);
      ctx.lineTo(ox + W * fit, c[1]);
      ctx.moveTo(c[0], oy);
      ctx.lineTo(c[0], c[1] - gap);
      ctx.moveTo(c[0], c[1] + gap);
      ctx.lineTo(c[0], oy + H * fit);
      ctx.stroke();
    }
  }

  /** CSS pixel (relative to the canvas) of a world point projected on the shown plane. */
  mmToCss(mm) {
    const w = this.view;
    if (!w) return null;
    const [hAxis, hDir] = w.g.h;
    const [vAxis, vDir] = w.g.v;
    const x = ((mm[hAxis] - w.h0) * hDir) / w.step;
    const y = ((mm[vAxis] - w.v0) * vDir) / w.step;
    return [w.ox + (x + 0.5) * w.fit, w.oy + (y + 0.5) * w.fit];
  }

  /** World point under a CSS pixel of the canvas (the normal coordinate taken from ``mm``). */
  cssToMm(cx, cy, mm) {
    const w = this.view;
    if (!w) return mm;
    const out = mm.slice();
    const [hAxis, hDir] = w.g.h;
    const [vAxis, vDir] = w.g.v;
    out[hAxis] = w.h0 + hDir * ((cx - w.ox) / w.fit - 0.5) * w.step;
    out[vAxis] = w.v0 + vDir * ((cy - w.oy) / w.fit - 0.5) * w.step;
    return out;
  }
}
