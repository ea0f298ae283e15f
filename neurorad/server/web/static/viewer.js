// Study view of the neurorad review app: synchronized image panels, finding list, QA form.
//
// The page template embeds the review description (JSON, no patient identifiers) in
// <script id="review-data" type="application/json"> and renders the form as saved (reopening a
// decided study shows every verdict, field and comment as decided). Safety rules of this file:
//  * the controls are wired before any image is fetched, so a click at any time takes effect (the
//    template renders them disabled, so nothing can be clicked before this script runs);
//  * the state sent on save is read from the controls themselves, so a checked control always is
//    what is saved;
//  * a decided result is shown read-only; changing it is an explicit amendment with a reason.
// Images: slice-wise 2D panels (preview2d.js, no WebGL: usable at once), of the downsampled display
// copies first and the full-resolution ones when they have arrived; NiiVue (zoom, pan, multiplanar,
// 3D) replaces them when the reader asks (its start-up and uploads block the page for seconds with
// software GL, so never unasked). Panels share one world
// position (RAS+ mm), plane and window. Images are shown in the radiological convention (patient
// right on screen left) with orientation letters computed from each panel's own projection of the
// patient axes, so the letters cannot disagree with the pixels.
// NiiVue (2.3 MB) is imported only when the reader asks for it (dynamic import).
import { SlicePanel, mmToVox, parseNifti, robustWindow } from "./preview2d.js";

let Niivue;
let NVImage;

const data = JSON.parse(document.getElementById("review-data").textContent);
const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

// NiiVue's SLICE_TYPE values
const PLANES = { axial: 0, coronal: 1, sagittal: 2, multiplanar: 3 };
// Voxel step per plane for slice scrolling (NiiVue voxel axes are RAS-ordered).
const SCROLL_AXIS = { axial: [0, 0, 1], coronal: [0, 1, 0], sagittal: [1, 0, 0], multiplanar: [0, 0, 1] };
// In-plane patient axes per plane: [horizontal axis, its + letter, its - letter], same for vertical (RAS+ mm).
const PLANE_AXES = {
  axial: [[0, "R", "L"], [1, "A", "P"]],
  coronal: [[0, "R", "L"], [2, "S", "I"]],
  sagittal: [[1, "A", "P"], [2, "S", "I"]],
};
const NORMAL_AXIS = { axial: 2, coronal: 1, sagittal: 0 };

const findings = data.findings ?? (data.lesions ?? []).map((l) => ({ ...l, id: l.lesion_id, label: l.lesion_id }));
const form = data.form ?? { finding_verdicts: [{ value: "keep" }, { value: "discard" }], discard_verdicts: ["discard"] };
const discardVerdicts = new Set(form.discard_verdicts ?? ["discard"]);
const kindColours = data.overlay?.kind_colours ?? {};

const state = {
  plane: "axial",
  opacity: data.overlay?.opacity ?? 0.8,
  panels: [], // { spec, el, nv: Niivue | null, prev: SlicePanel | null }
  mm: null, // the shown world position, RAS+ mm
  window: null, // [low, high] display window of the backgrounds
  selected: findings.length ? 0 : -1,
  missed: (data.decided?.missed ?? []).map((m) => ({ ...m })),
  editable: false,
  amending: false,
  viewerReady: false,
};

function status(msg, kind = "info") {
  const el = $("#status");
  el.textContent = msg;
  el.dataset.kind = kind;
}

// ---------------------------------------------------------------- the form (the only truth)
// A finding the workflow leaves to the reader (needs_verdict, e.g. a low-confidence MS lesion) has no
// default verdict: verdictOf gives null until the reader chooses, and an ACCEPTABLE decision waits for it.
function verdictOf(id) {
  const checked = $(`input[name="cand-${id}"]:checked`)?.value;
  if (checked !== undefined) return checked;
  return findings.find((f) => f.id === id)?.needs_verdict ? null : form.finding_verdicts[0].value;
}

function undecidedFindings() {
  return findings.filter((f) => f.needs_verdict && verdictOf(f.id) === null);
}

function discardedLabels() {
  const out = new Set();
  for (const f of findings) if (discardVerdicts.has(verdictOf(f.id))) out.add(Number(f.label ?? f.id));
  return out;
}

function setEditable(on) {
  state.editable = on;
  for (const el of $$("[data-edit]")) el.disabled = !on;
  const submit = $("#submit");
  if (submit) submit.disabled = !on;
  const amend = $("#amend");
  if (amend) {
    amend.hidden = !data.decided;
    amend.disabled = on || !data.can_decide;
  }
  document.body.dataset.editable = on ? "1" : "0";
}

function startAmendment() {
  state.amending = true;
  $("#amend-box").hidden = false;
  $("#submit").textContent = "Save amendment";
  setEditable(true);
  $("#amendment-reason").focus();
  status("Amending the decision: change what is wrong and give the reason.");
}

function selectLesion(index, jump = true) {
  if (index < 0 || index >= findings.length) return;
  state.selected = index;
  $$("#lesions tbody tr").forEach((tr, i) => tr.classList.toggle("selected", i === index));
  if (jump && state.viewerReady) {
    const f = findings[index];
    setAllMM([f.x_mm, f.y_mm, f.z_mm]);
  }
}

function setCandidate(index, verdict) {
  const f = findings[index];
  if (!f || !state.editable) return;
  const input = $(`input[name="cand-${f.id}"][value="${verdict}"]`);
  if (!input) return;
  input.checked = true;
  onVerdictChanged(index);
}

function onVerdictChanged(index, byUser = false) {
  const f = findings[index];
  // when a reader's click took effect (page time; the browser tests and the bench read it)
  if (byUser) document.body.dataset.lastVerdictMs = performance.now().toFixed(0);
  const tr = $(`#lesions tr[data-lesion="${f.id}"]`);
  if (tr) tr.dataset.verdict = verdictOf(f.id) ?? "";
  applyCandidatesToOverlay();
  updateSummary();
}

function updateSummary() {
  const undecided = undecidedFindings();
  const kept = findings.filter((f) => verdictOf(f.id) !== null && !discardVerdicts.has(verdictOf(f.id)));
  const vol = kept.reduce((s, f) => s + (f.volume_ml ?? 0), 0);
  // findings whose volume is not a precise measurement (contract: Finding.volume_note)
  const approx = kept.filter((f) => f.volume_note).length;
  const byKind = {};
  for (const f of kept) byKind[f.kind_label ?? f.kind] = (byKind[f.kind_label ?? f.kind] ?? 0) + 1;
  const kinds = Object.entries(byKind).map(([k, n]) => `${n} ${k}`).join(", ");
  $("#summary").textContent =
    `${kept.length} of ${findings.length} findings kept (${vol.toFixed(2)} mL` +
    (approx ? `; ${approx} volume(s) not measurable, approximate` : "") + ")" + (kinds ? `: ${kinds}` : "") +
    (state.missed.length ? `, ${state.missed.length} missed-finding marker(s)` : "") +
    (undecided.length ? `; ${undecided.length} awaiting your verdict` : "");
  for (const el of $$("#legend .kind")) {
    el.querySelector(".count").textContent = String(kept.filter((f) => f.kind === el.dataset.kind).length);
  }
}

function markMissed() {
  if (!state.editable || !state.viewerReady) return;
  const mm = Array.from(crosshairMM().slice(0, 3), (v) => Math.round(v * 10) / 10);
  state.missed.push({ x_mm: mm[0], y_mm: mm[1], z_mm: mm[2] });
  const li = document.createElement("li");
  li.textContent = `missed finding at ${mm.join(", ")} mm`;
  $("#missed").appendChild(li);
  updateSummary();
}

function setRadio(name, value) {
  if (!state.editable) return;
  const input = $(`input[name="${name}"][value="${value}"]`);
  if (input) input.checked = true;
}

function formValues() {
  const values = {};
  for (const fs of $$("fieldset.field")) {
    const name = fs.dataset.field;
    if (fs.dataset.kind === "choice") {
      const v = $(`input[name="field-${name}"]:checked`, fs)?.value;
      if (v !== undefined) values[name] = v;
    } else if (fs.dataset.kind === "bool") {
      values[name] = $(`input[name="field-${name}"]`, fs).checked;
    } else {
      const v = $(`input[name="field-${name}"]`, fs).value.trim();
      if (v) values[name] = v;
    }
  }
  return values;
}

async function submitDecision() {
  if (!data.can_decide || !state.editable) {
    status(data.can_decide ? "Press 'Amend decision' to change the decision." : "Your role cannot record decisions.",
           "error");
    return;
  }
  const decision = $("input[name=decision]:checked")?.value;
  if (!decision) return status("Choose ACCEPTABLE or UNACCEPTABLE first (A / U).", "error");
  const values = formValues();
  for (const fs of $$("fieldset.field")) {
    if (fs.dataset.kind === "choice" && values[fs.dataset.field] === undefined) {
      return status(`Give "${$("legend", fs).textContent}" first.`, "error");
    }
  }
  const timepoints = $$("input[name=timepoint-accept]");
  if (decision === "ACCEPTABLE" && timepoints.some((c) => !c.checked)) {
    return status("All time points must be accepted before the result can be ACCEPTABLE.", "error");
  }
  const undecided = undecidedFindings();
  if (decision === "ACCEPTABLE" && undecided.length) {
    const which = undecided.map((f) => `#${f.id}${f.kind_label ? ` (${f.kind_label})` : ""}`).join(", ");
    selectLesion(findings.indexOf(undecided[0]));
    return status(`Give your own verdict on ${which} before the result can be ACCEPTABLE.`, "error");
  }
  const reason = state.amending ? $("#amendment-reason").value.trim() : "";
  if (state.amending && !reason) return status("An amendment needs a reason.", "error");
  const body = {
    result_version: data.result_version,
    decision,
    values,
    comment: $("#comment").value,
    verdicts: findings.filter((f) => verdictOf(f.id) !== null)
      .map((f) => ({ finding_id: f.id, verdict: verdictOf(f.id) })),
    missed: state.missed,
    timepoints_accepted: timepoints.filter((c) => c.checked).map((c) => c.value),
  };
  if (state.amending) body.amendment_reason = reason;
  setEditable(false);
  status("Saving decision and regenerating the report...");
  try {
    const resp = await fetch(data.decision_url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken },
      body: JSON.stringify(body),
    });
    const out = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(typeof out.detail === "string" ? out.detail : `HTTP ${resp.status}`);
    data.decided = { ...body, ...out };
    state.amending = false;
    $("#amend-box").hidden = true;
    $("#amendment-reason").value = "";
    $("#submit").textContent = "Save decision";
    setEditable(false);
    status(`Decision saved: ${out.decision}. Report version ${out.report_version}` +
           (out.delivery ? ` ${out.delivery}.` : "."), "ok");
    document.body.dataset.decisionSaved = String(Number(document.body.dataset.decisionSaved ?? 0) + 1);
    if (out.report_url) {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = out.report_url;
      a.target = "_blank";
      a.dataset.version = String(out.report_version);
      a.textContent = `v${out.report_version} ${out.decision}` + (body.amendment_reason ? " (amendment)" : "");
      li.appendChild(a);
      $("#reports").appendChild(li);
      const link = $("#report-link");
      link.href = out.report_url;
      link.textContent = "open report";
      link.hidden = false;
    }
  } catch (err) {
    status(`Could not save: ${err.message}`, "error");
    setEditable(true);
  }
}

// ---------------------------------------------------------------- viewer
// Every panel shows the world point state.mm (RAS+ mm). A panel is drawn either by the 2D preview
// (preview2d.js: a SlicePanel over the downsampled display copies, no WebGL) or, once upgraded, by
// NiiVue at full resolution; panels switch one at a time, so the functions below handle both.
function crosshairMM() {
  return state.mm.slice();
}

function viewState() {
  return { mm: state.mm, plane: state.plane, window: state.window, lut: labelColormap(), opacity: state.opacity };
}

function render2D() {
  if (!state.viewerReady) return;
  const vs = viewState();
  for (const p of state.panels) if (!p.nv && p.prev) p.prev.render(vs);
  requestAnimationFrame(drawMarks);
}

function setAllMM(mm) {
  state.mm = Array.from(mm.slice(0, 3), Number);
  for (const { nv } of state.panels) {
    if (!nv) continue;
    nv.scene.crosshairPos = nv.mm2frac(state.mm);
    nv.drawScene();
  }
  render2D();
  showLocation();
}

// A NiiVue panel moved the crosshair (click, drag, its own keys): the others follow.
function onNiivueLocation(nv) {
  state.mm = Array.from(nv.frac2mm(nv.scene.crosshairPos).slice(0, 3));
  render2D();
  showLocation();
}

function showLocation() {
  if (!state.viewerReady) return;
  const p0 = state.panels[0];
  const mm = state.mm;
  let vox;
  let axis = SCROLL_AXIS[state.plane].indexOf(1);
  if (p0.nv) {
    vox = p0.nv.frac2vox(p0.nv.mm2frac(mm)).map((v) => Math.round(v));
  } else {
    const bg = p0.prev.bg;
    vox = mmToVox(bg, mm).map((v) => Math.round(v));
    const n = NORMAL_AXIS[state.plane] ?? 2; // the voxel axis closest to the plane's normal
    axis = [0, 1, 2].reduce((best, a) => (Math.abs(bg.A[n][a]) > Math.abs(bg.A[n][best]) ? a : best), 0);
  }
  const el = $("#location");
  el.dataset.slice = String(vox[axis]);
  el.dataset.vox = vox.join(",");
  el.textContent = `slice ${vox[axis]} | ${Array.from(mm.slice(0, 3), (v) => v.toFixed(1)).join(", ")} mm` +
    (p0.el.dataset.detail === "preview" ? " (preview)" : "");
  // All panels report the same world position (the synchronisation check in the tests reads this).
  el.dataset.panelsMm = state.panels
    .map(({ nv: p }) => Array.from(p ? p.frac2mm(p.scene.crosshairPos).slice(0, 3) : mm, (v) => v.toFixed(1)).join(","))
    .join(";");
  requestAnimationFrame(drawMarks);
}

// Canvas CSS pixel of a world point in a panel (null when not on a shown slice).
function mmToCss(panel, mm) {
  if (!panel.nv) return panel.prev ? panel.prev.mmToCss(mm) : null;
  const nv = panel.nv;
  const pos = nv.frac2canvasPos(nv.mm2frac(mm));
  if (!pos || !Number.isFinite(pos[0])) return null;
  const dpr = nv.uiData?.dpr ?? window.devicePixelRatio ?? 1;
  return [pos[0] / dpr, pos[1] / dpr];
}

// Orientation letters on the panel edges, read from each panel's own projection of the patient axes
// (NiiVue's, or the preview's), and the finding numbers next to the findings cut by the shown slice.
function drawMarks() {
  const centre = crosshairMM();
  for (const panel of state.panels) {
    const { spec, el } = panel;
    // the preview shows multiplanar as axial
    const plane = !panel.nv && state.plane === "multiplanar" ? "axial" : state.plane;
    const axes = PLANE_AXES[plane];
    const edges = { left: "", right: "", top: "", bottom: "" };
    if (axes) {
      const c = mmToCss(panel, centre);
      for (const [i, plus, minus] of axes) {
        const p = centre.slice();
        p[i] += 20;
        const q = mmToCss(panel, p);
        if (!c || !q) continue;
        const dx = q[0] - c[0];
        const dy = q[1] - c[1];
        if (Math.abs(dx) > Math.abs(dy)) {
          edges.left = dx < 0 ? plus : minus;
          edges.right = dx < 0 ? minus : plus;
        } else {
          edges.top = dy < 0 ? plus : minus;
          edges.bottom = dy < 0 ? minus : plus;
        }
      }
    }
    for (const side of Object.keys(edges)) $(`.orient.${side}`, el).textContent = edges[side];
    const marks = $(".marks", el);
    marks.replaceChildren();
    if (!spec.overlay || !axes) continue;
    const normal = NORMAL_AXIS[plane];
    const discarded = discardedLabels();
    for (const f of findings) {
      if (discarded.has(Number(f.label ?? f.id))) continue;
      const radius = Math.cbrt((3 * (f.volume_ml ?? 0) * 1000) / (4 * Math.PI));
      const fmm = [f.x_mm, f.y_mm, f.z_mm];
      if (Math.abs(fmm[normal] - centre[normal]) > Math.max(radius, 1.5)) continue;
      const proj = fmm.slice();
      proj[normal] = centre[normal];
      const pos = mmToCss(panel, proj);
      if (!pos) continue;
      const m = document.createElement("span");
      m.className = "mark";
      m.textContent = String(f.id);
      m.dataset.finding = String(f.id);
      m.style.color = kindColours[f.kind] ?? "#ff4040";
      m.style.left = `${pos[0] + Math.max(6, radius * 1.5)}px`;
      m.style.top = `${pos[1] - 18}px`;
      marks.appendChild(m);
    }
  }
}

function scrollSlices(step) {
  if (!state.viewerReady) return;
  const p0 = state.panels[0];
  if (p0.nv) {
    const [x, y, z] = SCROLL_AXIS[state.plane].map((a) => a * step);
    p0.nv.moveCrosshairInVox(x, y, z);
    setAllMM(p0.nv.frac2mm(p0.nv.scene.crosshairPos));
    return;
  }
  const n = NORMAL_AXIS[state.plane] ?? 2;
  const [lo, hi] = p0.prev.bounds;
  const mm = crosshairMM();
  mm[n] = Math.min(hi[n], Math.max(lo[n], mm[n] + step * p0.prev.step));
  setAllMM(mm);
}

function setPlane(name) {
  state.plane = name;
  $("#plane").value = name;
  if (!state.viewerReady) return;
  if (name === "multiplanar") startNiivue(); // the 2D slices show axial meanwhile
  for (const { nv } of state.panels) if (nv) nv.setSliceType(PLANES[name]);
  render2D();
  showLocation();
}

function setOpacity(value) {
  state.opacity = value;
  $("#opacity-value").textContent = `${Math.round(value * 100)}%`;
  if (!state.viewerReady) return;
  for (const { nv, spec } of state.panels) {
    if (nv && spec.overlay && nv.volumes.length > 1) nv.setOpacity(1, value);
  }
  render2D();
}

// Window values keep 4 significant digits (normalised images span 0-1: never shown as "0 - 1").
const fmtWindow = (v) => String(Number(Number(v).toPrecision(4)));

function setWindow(lo, hi) {
  if (!(hi > lo) || !state.viewerReady) return;
  state.window = [lo, hi];
  for (const { nv } of state.panels) {
    if (!nv) continue;
    const v = nv.volumes[0];
    v.cal_min = lo;
    v.cal_max = hi;
    nv.updateGLVolume();
  }
  render2D();
}

function readWindowFromVolume() {
  const [lo, hi] = state.window;
  const span = Math.abs(hi - lo) || 1;
  const step = String(Number((10 ** Math.floor(Math.log10(span / 100))).toPrecision(1)));
  for (const [id, val] of [["#win-min", lo], ["#win-max", hi]]) {
    $(id).step = step;
    $(id).value = fmtWindow(val);
  }
}

// Colour per label from the workflow's kind colours; discarded findings get alpha 0 (a LUT change,
// no pass over the voxels).
function hexRGB(hex) {
  const h = (hex ?? "#ff0000").replace("#", "");
  return [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16));
}

function labelColormap() {
  const discarded = discardedLabels();
  const labels = data.overlay?.labels ?? Object.fromEntries(findings.map((f) => [String(f.label ?? f.id), f.kind]));
  const max = Math.max(0, ...Object.keys(labels).map(Number));
  const cm = { R: [], G: [], B: [], A: [], I: [], labels: [] };
  for (let i = 0; i <= max; i++) {
    const kind = labels[String(i)];
    const [r, g, b] = i === 0 || kind === undefined ? [0, 0, 0] : hexRGB(kindColours[kind] ?? "#ff2828");
    cm.R.push(r);
    cm.G.push(g);
    cm.B.push(b);
    cm.A.push(i === 0 || kind === undefined || discarded.has(i) ? 0 : 255);
    cm.I.push(i);
    cm.labels.push(kind ?? "");
  }
  return cm;
}

function applyCandidatesToOverlay() {
  if (!state.viewerReady) return;
  const cm = labelColormap();
  for (const { nv, spec } of state.panels) {
    if (!nv || !spec.overlay || nv.volumes.length < 2) continue;
    nv.volumes[1].setColormapLabel(cm);
    nv.updateGLVolume();
  }
  render2D();
  requestAnimationFrame(drawMarks);
}

function panelUrl(spec) {
  if (spec.url) return spec.url;
  const seq = data.sequences?.[data.default_sequence] ?? {};
  return seq[spec.background ?? spec.timepoint];
}

function withLevel(url, level) {
  if (!level) return url;
  return url + (url.includes("?") ? "&" : "?") + `level=${level}`;
}

// ---------------------------------------------------------------- 2D slices (no WebGL)
// One SlicePanel per panel on the panel's canvas: the preview level first, then the full-resolution
// display copies (fetched and gunzipped by the browser's streams, so nothing blocks the page for
// long), each file fetched and parsed once and shared by the panels showing it.
function fetchVolumes(level) {
  const cache = new Map();
  const get = (url) => {
    if (!cache.has(url)) {
      cache.set(url, fetch(url, { credentials: "same-origin" }).then((r) => {
        if (!r.ok) throw new Error(`HTTP ${r.status} for an image`);
        return r.arrayBuffer();
      }).then(parseNifti));
    }
    return cache.get(url);
  };
  return Promise.all(state.panels.map(({ spec }) => Promise.all([
    get(withLevel(panelUrl(spec), level)),
    spec.overlay && data.overlay?.url ? get(withLevel(data.overlay.url, level)) : null,
  ])));
}

function showSlices(per, level) {
  per.forEach(([bg, ov], i) => {
    const p = state.panels[i];
    if (p.nv) return;
    if (p.prev) {
      p.prev.setVolumes(bg, ov);
    } else {
      const canvas = $("canvas", p.el);
      p.prev = new SlicePanel(canvas, bg, ov);
      canvas.addEventListener("pointerdown", (e) => {
        if (p.nv) return;
        const r = canvas.getBoundingClientRect();
        setAllMM(p.prev.cssToMm(e.clientX - r.left, e.clientY - r.top, crosshairMM()));
      });
      // the mouse wheel scrolls slices, as in NiiVue and PACS viewers
      canvas.addEventListener("wheel", (e) => {
        if (p.nv || !e.deltaY) return;
        e.preventDefault();
        scrollSlices(e.deltaY < 0 ? 1 : -1);
      }, { passive: false });
    }
    p.el.dataset.detail = level || "full";
  });
  if (!state.mm) {
    const [lo, hi] = state.panels[0].prev.bounds;
    state.mm = [0, 1, 2].map((a) => (lo[a] + hi[a]) / 2);
  }
  if (!state.window) state.window = robustWindow(state.panels[0].prev.bg);
  state.viewerReady = true;
  readWindowFromVolume();
  render2D();
  showLocation();
}

// ---------------------------------------------------------------- NiiVue (zoom, pan, multiplanar, 3D)
// NiiVue starts only when the reader asks (button, key v, or the multiplanar plane): with software
// GL its start-up and the upload of full-resolution volumes block the page for seconds.
const NV_OPTS = {
  backColor: [0, 0, 0, 1],
  crosshairColor: [0.2, 0.6, 1.0, 1.0],
  // thin (0.6 mm): a small finding under the crosshair stays visible on both sides of the line
  crosshairWidth: 0.6,
  crosshairWidthUnit: "mm",
  show3Dcrosshair: false,
  isColorbar: false,
  dragAndDropEnabled: false,
  multiplanarShowRender: 0,
  isOrientationTextVisible: false, // the DOM letters replace NiiVue's grey ones
  isRadiologicalConvention: data.radiological !== false,
  logLevel: "warn",
};

// The panels' full images as NiiVue volumes; each file fetched and decoded once (``cache``).
function panelImages(spec, cache) {
  const image = (opts) => {
    if (!cache.has(opts.url)) cache.set(opts.url, NVImage.loadFromUrl(opts));
    return cache.get(opts.url);
  };
  const vols = [image({ url: panelUrl(spec), name: "image.nii.gz" })];
  if (spec.overlay && data.overlay?.url) {
    vols.push(image({ url: data.overlay.url, name: "overlay.nii.gz", opacity: state.opacity }));
  }
  return Promise.all(vols);
}

function linkNiivuePanels() {
  const all = state.panels.filter((p) => p.nv).map((p) => p.nv);
  for (const nv of all) {
    nv.broadcastTo(all.filter((o) => o !== nv), { "2d": true, "3d": true, crosshair: true, zoomPan: true,
                                                  sliceType: true });
  }
}

// Panel i drawn by NiiVue: its own canvas (a WebGL one), layers in place (one GPU update) at the
// current position, plane and window; then the 2D canvas of that panel goes.
async function niivuePanel(i, cache) {
  const p = state.panels[i];
  const old = $("canvas", p.el);
  const canvas = document.createElement("canvas");
  canvas.tabIndex = 0;
  old.after(canvas);
  const nv = new Niivue({ ...NV_OPTS });
  await nv.attachToCanvas(canvas);
  const vols = await panelImages(p.spec, cache);
  if (vols.length > 1) {
    vols[1].setColormapLabel(labelColormap());
    vols[1].opacity = state.opacity;
  }
  [vols[0].cal_min, vols[0].cal_max] = state.window;
  // All layers at once and one GPU update per panel (addVolume would rebuild the background twice).
  nv.volumes = vols;
  nv.back = vols[0];
  nv.overlays = vols.slice(1);
  nv.updateGLVolume();
  nv.setSliceType(PLANES[state.plane]);
  nv.scene.crosshairPos = nv.mm2frac(state.mm);
  nv.onLocationChange = () => onNiivueLocation(nv);
  p.nv = nv;
  nv.drawScene();
  old.remove();
  p.prev = null;
  p.el.dataset.engine = "niivue";
  linkNiivuePanels();
}

let niivueStarted = null;

function startNiivue() {
  if (!state.viewerReady) return null;
  if (niivueStarted) return niivueStarted;
  $("#niivue").disabled = true;
  document.body.dataset.engine = "loading";
  status("Starting the 3D viewer (NiiVue); the page may pause for a few seconds…");
  niivueStarted = (async () => {
    ({ Niivue, NVImage } = await import("./dist/niivue.js"));
    const cache = new Map();
    const order = state.panels.map((p, i) => i)
      .sort((a, b) => state.panels[b].spec.overlay - state.panels[a].spec.overlay);
    for (const i of order) {
      await niivuePanel(i, cache);
      await new Promise((r) => setTimeout(r, 0)); // let queued clicks and keys run between panels
    }
    setAllMM(state.mm);
    applyCandidatesToOverlay();
    document.body.dataset.engine = "niivue";
    $("#niivue").hidden = true;
    status("3D viewer ready: drag to move, scroll to zoom, multiplanar view available.");
  })().catch((err) => {
    console.error(err);
    status(`3D viewer failed: ${err.message}`, "error");
    document.body.dataset.engine = "error";
  });
  return niivueStarted;
}

// ---------------------------------------------------------------- keys and wiring
function typingInField(e) {
  const t = e.target;
  return t instanceof HTMLTextAreaElement ||
    (t instanceof HTMLInputElement && (t.type === "number" || t.type === "text"));
}

function onKey(e) {
  if (e.ctrlKey && e.key === "Enter") {
    e.preventDefault();
    submitDecision();
    return;
  }
  if (typingInField(e) || e.altKey || e.metaKey || e.ctrlKey) return;
  const k = e.key;
  const scoreField = $$("fieldset.field").find((fs) => fs.dataset.kind === "choice");
  const actions = {
    ArrowUp: () => scrollSlices(1),
    ArrowDown: () => scrollSlices(-1),
    PageUp: () => scrollSlices(10),
    PageDown: () => scrollSlices(-10),
    a: () => setRadio("decision", "ACCEPTABLE"),
    u: () => setRadio("decision", "UNACCEPTABLE"),
    j: () => selectLesion(Math.min(state.selected + 1, findings.length - 1)),
    k: () => selectLesion(Math.max(state.selected - 1, 0)),
    d: () => setCandidate(state.selected, [...discardVerdicts][0]),
    r: () => setCandidate(state.selected, form.finding_verdicts[0].value),
    m: () => markMissed(),
    v: () => startNiivue(),
    x: () => setPlane("axial"),
    c: () => setPlane("coronal"),
    s: () => setPlane("sagittal"),
    "+": () => setOpacity(Math.min(1, state.opacity + 0.1)),
    "-": () => setOpacity(Math.max(0, state.opacity - 0.1)),
  };
  if (/^[1-9]$/.test(k) && scoreField) {
    setRadio(`field-${scoreField.dataset.field}`, k);
  } else if (actions[k]) {
    actions[k]();
  } else {
    return;
  }
  e.preventDefault();
  e.stopPropagation();
}

function wireControls() {
  $("#plane").addEventListener("change", (e) => setPlane(e.target.value));
  $("#opacity").addEventListener("input", (e) => setOpacity(Number(e.target.value) / 100));
  const applyWindow = () => setWindow(Number($("#win-min").value), Number($("#win-max").value));
  $("#win-min").addEventListener("change", applyWindow);
  $("#win-max").addEventListener("change", applyWindow);
  $$("#lesions tbody tr[data-lesion]").forEach((tr, i) => {
    tr.addEventListener("click", (e) => {
      if (!(e.target instanceof HTMLInputElement)) selectLesion(i);
    });
    $$("input[type=radio]", tr).forEach((r) => r.addEventListener("change", () => onVerdictChanged(i, true)));
  });
  $("#mark-missed")?.addEventListener("click", markMissed);
  $("#submit")?.addEventListener("click", submitDecision);
  $("#amend")?.addEventListener("click", startAmendment);
  $("#niivue").addEventListener("click", startNiivue);
  document.addEventListener("keydown", onKey, { capture: true });
  window.addEventListener("resize", () => state.viewerReady && requestAnimationFrame(render2D));
}


async function main() {
  // 1. The form works at once (before any image): wired, then enabled unless already decided.
  wireControls();
  $$("#lesions tbody tr[data-lesion]").forEach((tr, i) => onVerdictChanged(i));
  setEditable(Boolean(data.can_decide) && !data.decided);
  selectLesion(state.selected, false);
  $("#opacity-value").textContent = `${Math.round(state.opacity * 100)}%`;
  document.body.dataset.formReadyMs = performance.now().toFixed(0);
  document.body.dataset.formReady = "1";
  status(data.decided ? "Decided (read-only). Loading images…" : "Loading images…");

  // 2. The images as 2D slices (no WebGL): the downsampled preview first when there is one, then
  //    the full-resolution display copies; NiiVue only when the reader asks for it.
  state.panels = data.panels.map((spec, i) => ({ spec, el: $(`#panel-${i}`), nv: null, prev: null }));
  document.body.dataset.engine = "2d";
  const level = data.preview_level || "";
  const tShow = performance.now();
  showSlices(await fetchVolumes(level), level);
  if (state.selected >= 0) selectLesion(state.selected);
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  // time since navigation start (performance.now()'s origin), not since this script started
  const ms = performance.now();
  document.body.dataset.loadMs = ms.toFixed(0);
  document.body.dataset.volumesMs = (ms - tShow).toFixed(0);
  document.body.dataset.detail = level || "full";
  $("#detail").dataset.level = level || "full";
  $("#detail").textContent = level ? "preview resolution" : "";
  document.body.dataset.ready = "1";
  $("#niivue").hidden = false;
  status(`${data.decided ? "Decided (read-only). " : ""}Images shown in ${(ms / 1000).toFixed(1)} s` +
         (level ? "; loading full resolution…" : "."));
  // the longest time the page was blocked after the images were shown (what a reader feels)
  if (window.PerformanceObserver && PerformanceObserver.supportedEntryTypes?.includes("longtask")) {
    let maxBlock = 0;
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) maxBlock = Math.max(maxBlock, e.duration);
      document.body.dataset.maxBlockMs = maxBlock.toFixed(0);
    }).observe({ type: "longtask" });
  }
  if (level) {
    // fetched and gunzipped by the browser's streams (the page stays responsive), then swapped in
    showSlices(await fetchVolumes(""), "");
    document.body.dataset.fullMs = performance.now().toFixed(0);
    document.body.dataset.detail = "full";
    $("#detail").dataset.level = "full";
    $("#detail").textContent = "";
    if (!niivueStarted) {
      status(`${data.decided ? "Decided (read-only). " : ""}Full resolution in ` +
             `${(performance.now() / 1000).toFixed(1)} s.`);
    }
  }
}

main().catch((err) => {
  console.error(err);
  status(`Viewer failed: ${err.message}`, "error");
  document.body.dataset.ready = "error";
});
