#!/usr/bin/env bash
# Retrain the shipped neurorad-weak-brain model (docs/segment.md). Usage: scripts/train_neurorad_weak.sh WORKDIR
# 1. 40 domain-randomised phantoms with WEAK brain labels: 32 glioma (T1, T1c, T2, FLAIR in turn; seeds 21-24) and
#    8 WMH (FLAIR, T1 in turn; seed 25). Each label is deepbet's mask of the SAME case's T1 (same pose and warp),
#    never the phantom's truth: the paper's weak labels came from T1Gd and trained the FLAIR model too.
# 2. neurorad train on neurorad/segment/configs/neurorad-weak-brain.toml; the run's model/ is the model folder.
# Set THREADS (default 1) for torch's intra-op threads; a 2-core shared machine wants 1.
set -euo pipefail
WORK=$(realpath -m "${1:?usage: $0 WORKDIR}")
HERE=$(cd "$(dirname "$0")/.." && pwd)
NEURORAD=${NEURORAD:-neurorad}
export OMP_NUM_THREADS=${THREADS:-1}
mkdir -p "$WORK"
WEAK=(--target brain --labels weak --weak-engine deepbet --weak-from t1 --mix-contrasts --overwrite)
for s in 21 22 23 24; do
  [ -f "$WORK/Weak_s$s/dataset.json" ] || $NEURORAD --quiet dataset phantom --kind glioma --contrasts t1,t1c,t2,flair \
    --cases 8 --seed $s --out "$WORK/Weak_s$s" "${WEAK[@]}"
done
[ -f "$WORK/Weak_wmh_s25/dataset.json" ] || $NEURORAD --quiet dataset phantom --kind wmh --contrasts flair,t1 \
  --cases 8 --seed 25 --out "$WORK/Weak_wmh_s25" "${WEAK[@]}"
sed "s#^dataset = .*#dataset = [\"$WORK/Weak_s21\", \"$WORK/Weak_s22\", \"$WORK/Weak_s23\", \"$WORK/Weak_s24\", \"$WORK/Weak_wmh_s25\"]#" \
  "$HERE/neurorad/segment/configs/neurorad-weak-brain.toml" > "$WORK/neurorad-weak-brain.toml"
RESUME=(); [ -d "$WORK/run" ] && RESUME=(--resume)
$NEURORAD train "$WORK/neurorad-weak-brain.toml" --out "$WORK/run" "${RESUME[@]}"
echo "model folder: $WORK/run/model (copy it to neurorad/segment/models/neurorad-weak-brain/)"
