// Study view of the neurorad review app: synchronized NiiVue panels, lesion list, QA form.
//
// The page template embeds the review description (JSON, no patient identifiers) in
// <script id="review-data" type="application/json">. Panels share slice, plane and zoom: a
// panel moved with the mouse broadcasts to the others (NiiVue's broadcastTo, in mm), and every
// programmatic move (keyboard, lesion click) is applied to all panels in world millimetres.
import { Niivue, NVImage, SLICE_TYPE } from "./dist/niivue.js";

const data = JSON.parse(document.getElementById("review-data").textContent);
const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

const PLANES = {
  axial: SLICE_TYPE.AXIAL,
  coronal: SLICE_TYPE.CORONAL,
  sagittal: SLICE_TYPE.SAGITTAL,
  multiplanar: SLICE_TYPE.MULTIPLANAR,
};
// Voxel step per plane for slice scrolling (NiiVue voxel axes are RAS-ordered).
const SCROLL_AXIS = { axial: [0, 0, 1], coronal: [0, 1, 0], sagittal: [1, 0, 0], multiplanar: [0, 0, 1] };

const state = {
  plane: "axial",
  sequence: data.default_sequence,
  opacity: data.overlay.opacity,
  panels: [], // { nv, spec }
  selected: data.lesions.length ? 0 : -1,
  candidates: Object.fromEntries(data.lesions.map((l) => [String(l.lesion_id), "keep"])),
  missed: [],
  decision: null,
  score: null,
};

function status(msg, kind = "info") {
  const el = $("#status");
  el.textContent = msg;
  el.dataset.kind = kind;
}

function volumeList(panel) {
  const seq = data.sequences[state.sequence];
  const vols = [{ url: seq[panel.timepoint], name: `${panel.timepoint}.nii.gz` }];
  if (panel.overlay && data.overlay.url) {
    vols.push({
      url: data.overlay.url,
      name: "overlay.nii.gz",
      colormap: data.overlay.colormap,
      opacity: state.opacity,
      cal_min: data.overlay.cal_min,
      cal_max: data.overlay.cal_max,
    });
  }
  return vols;
}

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
}

function scrollSlices(step) {
  const [x, y, z] = SCROLL_AXIS[state.plane].map((a) => a * step);
  const nv = state.panels[0].nv;
  nv.moveCrosshairInVox(x, y, z);
  setAllMM(nv.frac2mm(nv.scene.crosshairPos));
}

function setPlane(name) {
  state.plane = name;
  $("#plane").value = name;
  for (const { nv } of state.panels) nv.setSliceType(PLANES[name]);
  showLocation();
}

function setOpacity(value) {
  state.opacity = value;
  for (const { nv, spec } of state.panels) {
    if (spec.overlay && nv.volumes.length > 1) nv.setOpacity(1, value);
  }
  $("#opacity-value").textContent = `${Math.round(value * 100)}%`;
}

function setWindow(lo, hi) {
  if (!(hi > lo)) return;
  for (const { nv } of state.panels) {
    const v = nv.volumes[0];
    v.cal_min = lo;
    v.cal_max = hi;
    nv.updateGLVolume();
  }
}

function readWindowFromVolume() {
  const v = state.panels[0].nv.volumes[0];
  $("#win-min").value = Number(v.cal_min).toFixed(0);
  $("#win-max").value = Number(v.cal_max).toFixed(0);
}

async function loadSequence(name) {
  const mm = state.panels.length && state.panels[0].nv.volumes.length ? crosshairMM() : null;
  state.sequence = name;
  // Each file is fetched and decoded once and shared by the panels showing it (the follow-up
  // appears in two panels); each panel still builds its own GPU textures.
  const images = new Map();
  const image = (opts) => {
    if (!images.has(opts.url)) images.set(opts.url, NVImage.loadFromUrl(opts));
    return images.get(opts.url);
  };
  await Promise.all(
    state.panels.map(async ({ nv, spec }) => {
      const vols = await Promise.all(volumeList(spec).map(image));
      // All layers at once and one GPU update per panel: NiiVue's addVolume re-processes every
      // layer already loaded, so adding the overlay after the background built the background's
      // texture twice (the same end state as addVolume: volumes, back = first, overlays = rest).
      nv.volumes = vols;
      nv.back = vols[0];
      nv.overlays = vols.slice(1);
      nv.updateGLVolume();
    }),
  );
  for (const { nv } of state.panels) nv.setSliceType(PLANES[state.plane]);
  if (Object.values(state.candidates).includes("discard")) applyCandidatesToOverlay();
  readWindowFromVolume();
  if (mm) setAllMM(mm);
}

function selectLesion(index, jump = true) {
  if (index < 0 || index >= data.lesions.length) return;
  state.selected = index;
  $$("#lesions tbody tr").forEach((tr, i) => tr.classList.toggle("selected", i === index));
  if (jump) {
    const l = data.lesions[index];
    setAllMM([l.x_mm, l.y_mm, l.z_mm]);
  }
}

function setCandidate(index, verdict) {
  const l = data.lesions[index];
  if (!l) return;
  state.candidates[String(l.lesion_id)] = verdict;
  const tr = $$("#lesions tbody tr")[index];
  tr.dataset.verdict = verdict;
  $$("input[type=radio]", tr).forEach((r) => (r.checked = r.value === verdict));
  applyCandidatesToOverlay();
  updateSummary();
}

// Discarded candidates disappear from the overlay: label voxels of discarded ids are zeroed in a
// copy of the label map (the original is kept to restore a candidate that is kept again).
function applyCandidatesToOverlay() {
  const discarded = new Set(
    Object.entries(state.candidates).filter(([, v]) => v === "discard").map(([id]) => Number(id)),
  );
  for (const { nv, spec } of state.panels) {
    if (!spec.overlay || nv.volumes.length < 2) continue;
    const vol = nv.volumes[1];
    if (!vol.originalLabels) vol.originalLabels = vol.img.slice();
    const src = vol.originalLabels;
    for (let i = 0; i < src.length; i++) vol.img[i] = discarded.has(src[i]) ? 0 : src[i];
    nv.updateGLVolume();
  }
}

function updateSummary() {
  const kept = data.lesions.filter((l) => state.candidates[String(l.lesion_id)] === "keep");
  const vol = kept.reduce((s, l) => s + (l.volume_ml ?? 0), 0);
  $("#summary").textContent =
    `${kept.length} of ${data.lesions.length} candidates kept (${vol.toFixed(2)} ml)` +
    (state.missed.length ? `, ${state.missed.length} missed lesion marker(s)` : "");
}

function markMissed() {
  const mm = Array.from(crosshairMM().slice(0, 3), (v) => Math.round(v * 10) / 10);
  state.missed.push({ x_mm: mm[0], y_mm: mm[1], z_mm: mm[2] });
  const li = document.createElement("li");
  li.textContent = `missed lesion at ${mm.join(", ")} mm`;
  $("#missed").appendChild(li);
  updateSummary();
}

function setDecision(value) {
  state.decision = value;
  $$("input[name=decision]").forEach((r) => (r.checked = r.value === value));
}

function setScore(value) {
  state.score = value;
  $$("input[name=score]").forEach((r) => (r.checked = Number(r.value) === value));
}

async function submitDecision() {
  if (!data.can_decide) {
    status("Your role cannot record decisions.", "error");
    return;
  }
  const timepoints = $$("input[name=timepoint-accept]");
  if (!state.decision) return status("Choose ACCEPTABLE or UNACCEPTABLE first (A / U).", "error");
  if (!state.score) return status("Give a score from 1 to 5 first (keys 1-5).", "error");
  if (state.decision === "ACCEPTABLE" && timepoints.some((c) => !c.checked)) {
    return status("All time points must be accepted before the result can be ACCEPTABLE.", "error");
  }
  const body = {
    result_version: data.result_version,
    decision: state.decision,
    score: state.score,
    comment: $("#comment").value,
    candidates: Object.entries(state.candidates).map(([id, verdict]) => ({ lesion_id: Number(id), verdict })),
    missed_lesions: state.missed,
    timepoints_accepted: timepoints.filter((c) => c.checked).map((c) => c.value),
  };
  $("#submit").disabled = true;
  status("Saving decision and regenerating the report...");
  try {
    const resp = await fetch(data.decision_url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken },
      body: JSON.stringify(body),
    });
    const out = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(out.detail ?? `HTTP ${resp.status}`);
    status(`Decision saved: ${out.decision}. Report version ${out.report_version} ${out.delivery}.`, "ok");
    document.body.dataset.decisionSaved = "1";
    if (out.report_url) {
      const a = $("#report-link");
      a.href = out.report_url;
      a.hidden = false;
    }
  } catch (err) {
    status(`Could not save: ${err.message}`, "error");
    $("#submit").disabled = false;
  }
}

function typingInField(e) {
  const t = e.target;
  return t instanceof HTMLTextAreaElement || (t instanceof HTMLInputElement && t.type === "number");
}

function onKey(e) {
  if (e.ctrlKey && e.key === "Enter") {
    e.preventDefault();
    submitDecision();
    return;
  }
  if (typingInField(e) || e.altKey || e.metaKey || e.ctrlKey) return;
  const k = e.key;
  const actions = {
    ArrowUp: () => scrollSlices(1),
    ArrowDown: () => scrollSlices(-1),
    PageUp: () => scrollSlices(10),
    PageDown: () => scrollSlices(-10),
    a: () => setDecision("ACCEPTABLE"),
    u: () => setDecision("UNACCEPTABLE"),
    j: () => selectLesion(Math.min(state.selected + 1, data.lesions.length - 1)),
    k: () => selectLesion(Math.max(state.selected - 1, 0)),
    d: () => setCandidate(state.selected, "discard"),
    r: () => setCandidate(state.selected, "keep"),
    m: () => markMissed(),
    x: () => setPlane("axial"),
    c: () => setPlane("coronal"),
    s: () => setPlane("sagittal"),
    "+": () => setOpacity(Math.min(1, state.opacity + 0.1)),
    "-": () => setOpacity(Math.max(0, state.opacity - 0.1)),
  };
  if (/^[1-5]$/.test(k)) {
    setScore(Number(k));
  } else if (actions[k]) {
    actions[k]();
  } else {
    return;
  }
  // Handled here: keep NiiVue's own canvas key bindings from acting on the same key.
  e.preventDefault();
  e.stopPropagation();
}

function wireControls() {
  $("#plane").addEventListener("change", (e) => setPlane(e.target.value));
  $("#sequence").addEventListener("change", (e) => loadSequence(e.target.value));
  $("#opacity").addEventListener("input", (e) => setOpacity(Number(e.target.value) / 100));
  const applyWindow = () => setWindow(Number($("#win-min").value), Number($("#win-max").value));
  $("#win-min").addEventListener("change", applyWindow);
  $("#win-max").addEventListener("change", applyWindow);
  $$("#lesions tbody tr").forEach((tr, i) => {
    tr.addEventListener("click", (e) => {
      if (!(e.target instanceof HTMLInputElement)) selectLesion(i);
    });
    $$("input[type=radio]", tr).forEach((r) => r.addEventListener("change", () => setCandidate(i, r.value)));
  });
  $$("input[name=decision]").forEach((r) => r.addEventListener("change", () => setDecision(r.value)));
  $$("input[name=score]").forEach((r) => r.addEventListener("change", () => setScore(Number(r.value))));
  $("#mark-missed").addEventListener("click", markMissed);
  $("#submit").addEventListener("click", submitDecision);
  document.addEventListener("keydown", onKey, { capture: true });
}

async function main() {
  const t0 = performance.now();
  const opts = {
    backColor: [0, 0, 0, 1],
    crosshairColor: [0.2, 0.6, 1.0, 1.0],
    crosshairWidth: 1,
    show3Dcrosshair: false,
    isColorbar: false,
    dragAndDropEnabled: false,
    multiplanarShowRender: 0,
    // Radiological convention (patient right on screen left), as in the report's key images.
    isRadiologicalConvention: true,
    logLevel: "warn",
  };
  for (const [i, spec] of data.panels.entries()) {
    const nv = new Niivue({ ...opts });
    await nv.attachToCanvas($(`#panel-${i} canvas`));
    state.panels.push({ nv, spec });
  }
  const tGl = performance.now();
  const all = state.panels.map((p) => p.nv);
  for (const nv of all) {
    nv.broadcastTo(all.filter((o) => o !== nv), { "2d": true, "3d": true, crosshair: true, zoomPan: true, sliceType: true });
    nv.onLocationChange = () => showLocation();
  }
  await loadSequence(state.sequence);
  const tVolumes = performance.now();
  // opacity is already applied by loadSequence; only the label (setOpacity would redo the GPU upload)
  $("#opacity-value").textContent = `${Math.round(state.opacity * 100)}%`;
  if (state.selected >= 0) selectLesion(state.selected);
  else showLocation();
  wireControls();
  updateSummary();
  const ms = performance.now() - t0;
  document.body.dataset.loadMs = ms.toFixed(0);
  document.body.dataset.glInitMs = (tGl - t0).toFixed(0);
  document.body.dataset.volumesMs = (tVolumes - tGl).toFixed(0);
  document.body.dataset.ready = "1";
  status(`Loaded in ${(ms / 1000).toFixed(1)} s.`);
}

main().catch((err) => {
  console.error(err);
  status(`Viewer failed: ${err.message}`, "error");
  document.body.dataset.ready = "error";
});
