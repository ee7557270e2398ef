#!/usr/bin/env bash
# The reproduction study of REPRODUCTION.md on the data every machine here has, at a budget that fits
# 2 CPU cores (about 50 minutes): every number and figure in REPRODUCTION.md comes from these commands.
#   bash scripts/reproduce.sh [OUT]          (OUT defaults to runs/reproduction)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/reproduction}
SLAC=${SLAC:-.venv/bin/slac}
PYTHON=${PYTHON:-.venv/bin/python}
QUIET=(--progress false --tensorboard off)

# 1. Digits (1437 train / 360 test), LeNet++, 20 epochs: CNN and the ANN with every head; 3 seeds.
for seed in 0 1 2; do
    for recipe in lenet_cnn_linear lenet_ann_linear lenet_ann_lsoftmax lenet_ann_lgm \
                  lenet_ann_mom lenet_ann_sl lenet_ann_slac; do
        [ -f "$OUT/digits/${recipe}_seed$seed/summary.json" ] && continue
        $SLAC train --config configs/digits/$recipe.yaml --seed $seed --out_dir "$OUT/digits" \
            --name "${recipe}_seed$seed" --overwrite "${QUIET[@]}"
    done
done

# 2. Figure 3 on digits: LeNet++ ANN with a 2-D feature layer, each head, seed 0.
for head in linear lgm mom sl slac; do
    [ -f "$OUT/fig3/lenet2d_ann_${head}_seed0/summary.json" ] && continue
    $SLAC train --config configs/digits/lenet_ann_$head.yaml --model_options.feature_dim 2 --out_dir "$OUT/fig3" \
        --name "lenet2d_ann_${head}_seed0" --overwrite "${QUIET[@]}"
done

# 3. Fashion-MNIST (Debian's dataset-fashion-mnist), LeNet++ ANN vs SLAC-ANN, 3 seeds, on a CPU budget:
#    the first 1000 training images, 3 epochs, scored on the first 1000 test images.
if [ -d /usr/share/datasets/fashion-mnist ]; then
    for seed in 0 1 2; do
        for recipe in lenet_ann_linear lenet_ann_slac; do
            [ -f "$OUT/fashion-mnist/${recipe}_seed$seed/summary.json" ] && continue
            $SLAC train --config configs/fashion-mnist/$recipe.yaml --seed $seed --train_subset 1000 \
                --test_subset 1000 --epochs 3 --batch_size 64 --out_dir "$OUT/fashion-mnist" \
                --name "${recipe}_seed$seed" --overwrite "${QUIET[@]}"
        done
    done
fi

# 4. Tables and figures.
mkdir -p "$OUT/figures"
$SLAC report "$OUT"/digits/*_seed* --baseline ANN --markdown "$OUT/digits_table.md" --csv "$OUT/digits_table.csv"
$SLAC report "$OUT"/digits/*_seed* --layout table3 --markdown "$OUT/digits_table3.md"
[ -d "$OUT/fashion-mnist" ] && $SLAC report "$OUT"/fashion-mnist/*_seed* --baseline ANN \
    --markdown "$OUT/fashion_table.md" --csv "$OUT/fashion_table.csv"
$SLAC plot features "$OUT"/fig3/lenet2d_ann_{linear,lgm,mom,sl,slac}_seed0 --out "$OUT/figures/fig3_features.png"
$SLAC plot histograms "$OUT/digits/lenet_ann_linear_seed0" --out "$OUT/figures/fig1_histograms_ann.png"
$SLAC plot histograms "$OUT/digits/lenet_ann_slac_seed0" --out "$OUT/figures/fig1_histograms_slac_ann.png"
$SLAC plot curves "$OUT"/digits/lenet_{ann_linear,ann_slac,cnn_linear}_seed0 --out "$OUT/figures/fig4_curves.png"
$PYTHON scripts/skewness_angles.py "$OUT"/digits/lenet_ann_{sl,slac}_seed* "$OUT"/fig3/lenet2d_ann_{sl,slac}_seed0 \
    "$OUT"/fashion-mnist/lenet_ann_slac_seed* | tee "$OUT/skewness_angles.md"
