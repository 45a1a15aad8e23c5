#!/usr/bin/env bash
# Reproduces the shipped default models and their reports on a CPU (2 cores: about 35 minutes for
# the two models trained side by side, one thread each, then about 10 for the ablation).
# Run inside the project's environment:
#   DATA=data/photos STEPS=2000 ABLATION_STEPS=500 bash scripts/train_default_model.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-data/photos}
STEPS=${STEPS:-2000}
ABLATION_STEPS=${ABLATION_STEPS:-500}

[ -f "$DATA/manifest.json" ] || cicm-deploy data fetch "$DATA"

common=(--data "$DATA" --set train.val_every=250 --set train.checkpoint_every=500 --set train.log_every=25)
OMP_NUM_THREADS=1 cicm-deploy train --preset default --out runs/default --steps "$STEPS" "${common[@]}" &
OMP_NUM_THREADS=1 cicm-deploy train --preset default-unet --out runs/default-unet --steps "$STEPS" "${common[@]}" &
wait
python scripts/ship_models.py runs/default runs/default-unet --data "$DATA"

cicm-deploy eval cicm_deploy/assets/models/default.pt cicm_deploy/assets/models/default-unet.pt \
    --name UNet-CICM --name UNet --data "$DATA" --per-bin 16 -o reports/quality \
    --title "Default model: UNet-CICM vs UNet vs Telea vs Navier-Stokes" \
    --note "Models: cicm_deploy/assets/models/default.pt and default-unet.pt, trained by scripts/train_default_model.sh."

# Ablation at ABLATION_STEPS steps: the two runs above at that step, plus Eq. 4 as printed and
# the paper's additive memory update (Eq. 2), all from the same seed and data.
OMP_NUM_THREADS=1 cicm-deploy train --preset default --out runs/ablation-printed --steps "$ABLATION_STEPS" \
    --set model.memory.gamma_convention=printed "${common[@]}" &
OMP_NUM_THREADS=1 cicm-deploy train --preset default --out runs/ablation-additive --steps "$ABLATION_STEPS" \
    --set model.memory.update_rule=additive "${common[@]}" &
wait
cicm-deploy eval "runs/default/step_$ABLATION_STEPS.pt" "runs/default-unet/step_$ABLATION_STEPS.pt" \
    runs/ablation-printed/last.pt runs/ablation-additive/last.pt \
    --name "CICM (gamma as described, bounded update)" --name "UNet (no CICM)" \
    --name "CICM, Eq. 4 as printed" --name "CICM, additive update (Eq. 2)" \
    --no-baselines --data "$DATA" --per-bin 16 -o reports/ablation --title "Ablation at $ABLATION_STEPS steps" \
    --note "Reproduce: DATA=$DATA STEPS=$STEPS ABLATION_STEPS=$ABLATION_STEPS bash scripts/train_default_model.sh"
