#!/usr/bin/env bash
# Retrain the shipped neurorad-weak-brain model (docs/segment.md). Usage: scripts/train_neurorad_weak.sh WORKDIR
# 1. 9 domain-randomised glioma phantoms (T1, T2, FLAIR in turn; seeds 11, 12, 13, three processes) with weak
#    prior-gmm brain labels;
# 2. neurorad train on neurorad/segment/configs/neurorad-weak-brain.toml; the run's model/ is the model folder.
set -euo pipefail
WORK=$(realpath -m "${1:?usage: $0 WORKDIR}")
HERE=$(cd "$(dirname "$0")/.." && pwd)
NEURORAD=${NEURORAD:-neurorad}
mkdir -p "$WORK"
for s in 11 12 13; do
  $NEURORAD --quiet dataset phantom --kind glioma --target brain --labels weak --contrasts t1,t2,flair \
    --mix-contrasts --cases 3 --seed $s --out "$WORK/Weak_s$s" --overwrite &
done
wait
sed "s#^dataset = .*#dataset = [\"$WORK/Weak_s11\", \"$WORK/Weak_s12\", \"$WORK/Weak_s13\"]#" \
  "$HERE/neurorad/segment/configs/neurorad-weak-brain.toml" > "$WORK/neurorad-weak-brain.toml"
$NEURORAD train "$WORK/neurorad-weak-brain.toml" --out "$WORK/run"
echo "model folder: $WORK/run/model (copy it to neurorad/segment/models/neurorad-weak-brain/)"
