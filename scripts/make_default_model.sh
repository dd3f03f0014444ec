#!/usr/bin/env bash
# Rebuild the bundled default model (aidetect/models/default.onnx) from CIFAKE, as the model card says.
# About five hours on a 2-core CPU. DATA is the extracted CIFAKE training split (train/real, train/fake).
set -euo pipefail
DATA=${1:-$HOME/data/train}
RUN=${2:-$HOME/runs}
mkdir -p "$RUN"

# 1. Train: CoAtNet-nano at the native 32 px, the seed's recipe (cross-entropy, LAMB, cosine,
#    random crop + flip), 5 epochs, 5% stratified validation split (seed 0).
aidetect train "$DATA" -o "$RUN/cifake-nano32.onnx" --arch coatnet_nano_rw_224 --img-size 32 \
    --epochs 5 --batch-size 64 --lr 2e-3 --val-split 0.05 --seed 0

# 2. A second cosine cycle from the best weights of the first (warm start: fresh optimiser and
#    schedule, half the peak learning rate), 6 epochs on the same split.
aidetect train "$DATA" -o "$RUN/cifake-nano32b.onnx" --arch coatnet_nano_rw_224 --img-size 32 \
    --epochs 6 --batch-size 64 --lr 1e-3 --val-split 0.05 --seed 0 --init "$RUN/cifake-nano32.run/best.pt"

# 3. A third cycle from the best weights of the second, 7 epochs, same peak learning rate.
aidetect train "$DATA" -o "$RUN/cifake-nano32c.onnx" --arch coatnet_nano_rw_224 --img-size 32 \
    --epochs 7 --batch-size 64 --lr 1e-3 --val-split 0.05 --seed 0 --init "$RUN/cifake-nano32b.run/best.pt"

# 4. Export the best checkpoint with float16 weight storage (58 MB -> 29 MB; compute stays float32).
aidetect export "$RUN/cifake-nano32c.run/best.pt" -o "$RUN/cifake-nano32c-fp16.onnx" --fp16-weights

# 5. Calibrate temperature and the default threshold on the same validation split.
aidetect calibrate "$DATA" --holdout 0.05 --seed 0 --model "$RUN/cifake-nano32c-fp16.onnx" \
    -o aidetect/models/default.onnx --target-fpr 0.02

# 6. The model card's numbers.
aidetect eval "$DATA" --holdout 0.05 --seed 0 -o "$RUN/eval-default"
