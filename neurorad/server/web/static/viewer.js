// Study view of the neurorad review app: synchronized NiiVue panels, finding list, QA form.
//
// The page template embeds the review description (JSON, no patient identifiers) in
// <script id="review-data" type="application/json"> and renders the form as saved (reopening a
// decided study shows every verdict, field and comment as decided). Safety rules of this file:
//  * the controls are wired before any image is fetched, so a click at any time takes effect (the
//    template renders them disabled, so nothing can be clicked before this script runs);
//  * the state sent on save is read from the controls themselves, so a checked control always is
//    what is saved;
//  * a decided result is shown read-only; changing it is an explicit amendment with a reason.
// Panels share slice, plane and zoom (NiiVue's broadcastTo, in mm). Images are shown in the
// radiological convention (patient right on screen left) with orientation letters computed from
// NiiVue's own projection of the patient axes, so the letters cannot disagree with the pixels.
// NiiVue (2.3 MB) is imported after the form is wired (dynamic import), so the form never waits for it.
let Niivue;
let NVImage;

const T0 = performance.now();
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
  panels: [], // { nv, spec, el }
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
function verdictOf(id) {
  return $(`input[name="cand-${id}"]:checked`)?.value ?? form.finding_verdicts[0].value;
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
  if (tr) tr.dataset.verdict = verdictOf(f.id);
  applyCandidatesToOverlay();
  updateSummary();
}

function updateSummary() {
  const kept = findings.filter((f) => !discardVerdicts.has(verdictOf(f.id)));
  const vol = kept.reduce((s, f) => s + (f.volume_ml ?? 0), 0);
  const byKind = {};
  for (const f of kept) byKind[f.kind_label ?? f.kind] = (byKind[f.kind_label ?? f.kind] ?? 0) + 1;
  const kinds = Object.entries(byKind).map(([k, n]) => `${n} ${k}`).join(", ");
  $("#summary").textContent =
    `${kept.length} of ${findings.length} findings kept (${vol.toFixed(2)} mL)` + (kinds ? `: ${kinds}` : "") +
    (state.missed.length ? `, ${state.missed.length} missed-finding marker(s)` : "");
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
  const reason = state.amending ? $("#amendment-reason").value.trim() : "";
  if (state.amending && !reason) return status("An amendment needs a reason.", "error");
  const body = {
    result_version: data.result_version,
    decision,
    values,
    comment: $("#comment").value,
    verdicts: findings.map((f) => ({ finding_id: f.id, verdict: verdictOf(f.id) })),
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
function crosshairMM() {
  const nv = state.panels[0].nv;
  return nv.frac2mm(nv.scene.crosshairPos);
}

function setAllMM(mm) {
  for (const { nv } of state.panels) {
    nv.scene.crosshairPos = nv.mm2frac(mm);
    nv.drawScene();
  }
  showLocation();
}

function showLocation() {
  if (!state.viewerReady) return;
  const nv = state.panels[0].nv;
  const vox = nv.frac2vox(nv.scene.crosshairPos).map((v) => Math.round(v));
  const mm = nv.frac2mm(nv.scene.crosshairPos);
  const axis = SCROLL_AXIS[state.plane].indexOf(1);
  const el = $("#location");
  el.dataset.slice = String(vox[axis]);
  el.dataset.vox = vox.join(",");
  el.textContent = `slice ${vox[axis]} | ${Array.from(mm.slice(0, 3), (v) => v.toFixed(1)).join(", ")} mm`;
  // All panels report the same world position (the synchronisation check in the tests reads this).
  el.dataset.panelsMm = state.panels
    .map(({ nv: p }) => Array.from(p.frac2mm(p.scene.crosshairPos).slice(0, 3), (v) => v.toFixed(1)).join(","))
    .join(";");
  requestAnimationFrame(drawMarks);
}

// Canvas CSS pixel of a world point in a panel (null when not on a shown slice).
function mmToCss(nv, mm) {
  const pos = nv.frac2canvasPos(nv.mm2frac(mm));
  if (!pos || !Number.isFinite(pos[0])) return null;
  const dpr = nv.uiData?.dpr ?? window.devicePixelRatio ?? 1;
  return [pos[0] / dpr, pos[1] / dpr];
}

// Orientation letters on the panel edges, read from NiiVue's projection of the patient axes, and the
// finding numbers next to the findings cut by the shown slice (overlay panels).
function drawMarks() {
  const centre = Array.from(crosshairMM().slice(0, 3));
  for (const { nv, spec, el } of state.panels) {
    const axes = PLANE_AXES[state.plane];
    const edges = { left: "", right: "", top: "", bottom: "" };
    if (axes) {
      const c = mmToCss(nv, centre);
      for (const [i, plus, minus] of axes) {
        const p = centre.slice();
        p[i] += 20;
        const q = mmToCss(nv, p);
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
    const normal = NORMAL_AXIS[state.plane];
    const discarded = discardedLabels();
    for (const f of findings) {
      if (discarded.has(Number(f.label ?? f.id))) continue;
      const radius = Math.cbrt((3 * (f.volume_ml ?? 0) * 1000) / (4 * Math.PI));
      const fmm = [f.x_mm, f.y_mm, f.z_mm];
      if (Math.abs(fmm[normal] - centre[normal]) > Math.max(radius, 1.5)) continue;
      const proj = fmm.slice();
      proj[normal] = centre[normal];
      const pos = mmToCss(nv, proj);
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
  const [x, y, z] = SCROLL_AXIS[state.plane].map((a) => a * step);
  const nv = state.panels[0].nv;
  nv.moveCrosshairInVox(x, y, z);
  setAllMM(nv.frac2mm(nv.scene.crosshairPos));
}

function setPlane(name) {
  state.plane = name;
  $("#plane").value = name;
  if (!state.viewerReady) return;
  for (const { nv } of state.panels) nv.setSliceType(PLANES[name]);
  showLocation();
}

function setOpacity(value) {
  state.opacity = value;
  $("#opacity-value").textContent = `${Math.round(value * 100)}%`;
  if (!state.viewerReady) return;
  for (const { nv, spec } of state.panels) {
    if (spec.overlay && nv.volumes.length > 1) nv.setOpacity(1, value);
  }
}

// Window values keep 4 significant digits (normalised images span 0-1: never shown as "0 - 1").
const fmtWindow = (v) => String(Number(Number(v).toPrecision(4)));

function setWindow(lo, hi) {
  if (!(hi > lo) || !state.viewerReady) return;
  for (const { nv } of state.panels) {
    const v = nv.volumes[0];
    v.cal_min = lo;
    v.cal_max = hi;
    nv.updateGLVolume();
  }
}

function readWindowFromVolume() {
  const v = state.panels[0].nv.volumes[0];
  const span = Math.abs(v.cal_max - v.cal_min) || 1;
  const step = String(Number((10 ** Math.floor(Math.log10(span / 100))).toPrecision(1)));
  for (const [id, val] of [["#win-min", v.cal_min], ["#win-max", v.cal_max]]) {
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
    if (!spec.overlay || nv.volumes.length < 2) continue;
    nv.volumes[1].setColormapLabel(cm);
    nv.updateGLVolume();
  }
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

// Load panels' images at one level of detail ("preview": a downsampled display copy; "" full).
// Each file is fetched and decoded once (``cache``) and shared by the panels showing it.
function panelImages(spec, level, cache) {
  const image = (opts) => {
    if (!cache.has(opts.url)) cache.set(opts.url, NVImage.loadFromUrl(opts));
    return cache.get(opts.url);
  };
  const vols = [image({ url: withLevel(panelUrl(spec), level), name: "image.nii.gz" })];
  if (spec.overlay && data.overlay?.url) {
    vols.push(image({ url: withLevel(data.overlay.url, level), name: "overlay.nii.gz", opacity: state.opacity }));
  }
  return Promise.all(vols);
}

async function loadImages(level) {
  const cache = new Map();
  return Promise.all(state.panels.map(({ spec }) => panelImages(spec, level, cache)));
}

// Put one panel's layers in place (one GPU update), keeping the crosshair position and the window.
function swapPanel(i, vols, mm, win) {
  const { nv } = state.panels[i];
  if (vols.length > 1) {
    vols[1].setColormapLabel(labelColormap());
    vols[1].opacity = state.opacity;
  }
  if (win) [vols[0].cal_min, vols[0].cal_max] = win;
  // All layers at once and one GPU update per panel (addVolume would rebuild the background twice).
  nv.volumes = vols;
  nv.back = vols[0];
  nv.overlays = vols.slice(1);
  nv.updateGLVolume();
  nv.setSliceType(PLANES[state.plane]);
  if (mm) nv.scene.crosshairPos = nv.mm2frac(mm);
}

function showImages(per) {
  per.forEach((vols, i) => swapPanel(i, vols, null, null));
  state.viewerReady = true;
  readWindowFromVolume();
}

// Decoding and uploading a full image blocks the page (NiiVue works on the main thread; with
// software GL for seconds). So the full images replace the preview only while the reader pauses
// (READER_PAUSE_MS without a key or pointer event), one panel at a time, overlay panel first.
const READER_PAUSE_MS = 2000;
let lastInput = performance.now();
for (const ev of ["pointerdown", "keydown", "wheel"]) {
  document.addEventListener(ev, () => { lastInput = performance.now(); }, { capture: true, passive: true });
}
async function readerPause() {
  for (;;) {
    const wait = READER_PAUSE_MS - (performance.now() - lastInput);
    if (wait <= 0) return;
    await new Promise((r) => setTimeout(r, wait + 20));
  }
}

async function upgradeToFull() {
  const order = state.panels.map((p, i) => i)
    .sort((a, b) => state.panels[b].spec.overlay - state.panels[a].spec.overlay);
  const cache = new Map();
  for (const i of order) {
    await readerPause();
    const vols = await panelImages(state.panels[i].spec, "", cache);
    await readerPause();
    const v = state.panels[0].nv.volumes[0];
    swapPanel(i, vols, crosshairMM(), [v.cal_min, v.cal_max]);
    state.panels[i].el.dataset.detail = "full";
    showLocation();
  }
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
  document.addEventListener("keydown", onKey, { capture: true });
  window.addEventListener("resize", () => state.viewerReady && requestAnimationFrame(drawMarks));
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

  // 2. The viewer: preview (downsampled display copies) first, full resolution after.
  ({ Niivue, NVImage } = await import("./dist/niivue.js"));
  const opts = {
    backColor: [0, 0, 0, 1],
    crosshairColor: [0.2, 0.6, 1.0, 1.0],
    // thin (0.6 mm): a small finding under the crosshair stays visible on both sides of the line
    crosshairWidth: 0.6,
    crosshairWidthUnit: "mm",
    show3Dcrosshair: false,
    isColorbar: false,
    dragAndDropEnabled: false,
    multiplanarShowRender: 0,
    isOrientationTextVisible: false, // the DOM letters below replace NiiVue's grey ones
    isRadiologicalConvention: data.radiological !== false,
    logLevel: "warn",
  };
  for (const [i, spec] of data.panels.entries()) {
    const nv = new Niivue({ ...opts });
    const el = $(`#panel-${i}`);
    await nv.attachToCanvas($("canvas", el));
    state.panels.push({ nv, spec, el });
  }
  const tGl = performance.now();
  const all = state.panels.map((p) => p.nv);
  for (const nv of all) {
    nv.broadcastTo(all.filter((o) => o !== nv), { "2d": true, "3d": true, crosshair: true, zoomPan: true,
                                                  sliceType: true });
    nv.onLocationChange = () => showLocation();
  }
  const levels = data.preview_level ? [data.preview_level, ""] : [""];
  const first = await loadImages(levels[0]);
  showImages(first);
  for (const p of state.panels) p.el.dataset.detail = levels[0] || "full";
  if (state.selected >= 0) selectLesion(state.selected);
  else showLocation();
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  // time since navigation start (performance.now()'s origin), not since this script started
  const ms = performance.now();
  document.body.dataset.loadMs = ms.toFixed(0);
  document.body.dataset.glInitMs = (tGl - T0).toFixed(0);
  document.body.dataset.volumesMs = (performance.now() - tGl).toFixed(0);
  document.body.dataset.detail = levels[0] || "full";
  $("#detail").dataset.level = levels[0] || "full";
  $("#detail").textContent = levels[0] ? "preview resolution" : "";
  document.body.dataset.ready = "1";
  status(`${data.decided ? "Decided (read-only). " : ""}Images shown in ${(ms / 1000).toFixed(1)} s` +
         (levels.length > 1 ? "; loading full resolution…" : "."));
  // the longest time the page was blocked after the images were shown (what a reader feels)
  if (window.PerformanceObserver && PerformanceObserver.supportedEntryTypes?.includes("longtask")) {
    let maxBlock = 0;
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) maxBlock = Math.max(maxBlock, e.duration);
      document.body.dataset.maxBlockMs = maxBlock.toFixed(0);
    }).observe({ type: "longtask" });
  }
  if (levels.length > 1) {
    // the reader gets the page first: the full images load while the reader pauses (counted from now)
    lastInput = Math.max(lastInput, performance.now());
    await upgradeToFull();
    document.body.dataset.fullMs = performance.now().toFixed(0);
    document.body.dataset.detail = "full";
    $("#detail").dataset.level = "full";
    $("#detail").textContent = "";
    status(`${data.decided ? "Decided (read-only). " : ""}Full resolution in ` +
           `${(performance.now() / 1000).toFixed(1)} s.`);
  }
}

main().catch((err) => {
  console.error(err);
  status(`Viewer failed: ${err.message}`, "error");
  document.body.dataset.ready = "error";
});
