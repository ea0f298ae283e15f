#!/usr/bin/env bash
# Debian 12 system packages neurorad needs (run as root). Skips apt when all are present.
set -euo pipefail
PKGS=(mricron-data dcmtk orthanc orthanc-dicomweb chromium chromium-driver postgresql
      util-linux iproute2 fonts-dejavu-core poppler-utils dicom3tools
      r-base-core r-cran-rms r-cran-proc)  # R rms/pROC: oracles of the cohort toolkit's tests
missing=()
# The web viewer's bundle needs Node.js >= 18 with npm; the machine image usually has it.
command -v npm >/dev/null 2>&1 || PKGS+=(nodejs npm)
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the packaged Orthanc and PostgreSQL services; neurorad's tests start their own.
  $SUDO systemctl disable --now orthanc postgresql >/dev/null 2>&1 || true
  $SUDO service orthanc stop >/dev/null 2>&1 || true
fi
