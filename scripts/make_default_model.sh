#!/usr/bin/env bash
# Rebuild the bundled default model (aidetect/models/default.onnx) from CIFAKE, as the model card says.
# About nine hours on a 2-core CPU. DATA is the extracted CIFAKE training split (train/real, train/fake).
set -euo pipefail
DATA=${1:-$HOME/data/train}
RUN=${2:-$HOME/runs}
mkdir -p "$RUN"

# 1. Member A: CoAtNet-nano at the native 32 px, the seed's recipe (cross-entropy, LAMB, cosine,
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

# 4. Member B: the same model with a stride-1 stem (full resolution in the first stage), one
#    8-epoch cosine run from random weights on the same split.
aidetect train "$DATA" -o "$RUN/cifake-nano32s1.onnx" --arch coatnet_nano_rw_224 --img-size 32 \
    --stem-stride 1 --epochs 8 --batch-size 64 --lr 2e-3 --val-split 0.05 --seed 0

# 5. One file averaging the logits of member A (third cycle's best) and member B (its last epoch),
#    with int8 weight storage (117 MB -> 30 MB; compute stays float32).
aidetect export "$RUN/cifake-nano32c.run/best.pt" "$RUN/cifake-nano32s1.run/last.pt" \
    -o "$RUN/cifake-mean-int8.onnx" --int8-weights

# 6. Calibrate temperature and the default threshold on the same validation split.
aidetect calibrate "$DATA" --holdout 0.05 --seed 0 --model "$RUN/cifake-mean-int8.onnx" \
    -o aidetect/models/default.onnx --target-fpr 0.02

# 7. The model card's numbers.
aidetect eval "$DATA" --holdout 0.05 --seed 0 -o "$RUN/eval-default"
