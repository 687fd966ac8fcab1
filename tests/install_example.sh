#!/bin/sh
# CTest: the install tree (cmake --install) builds examples/embed.c through pkg-config, and
# the example embeds Fashion-MNIST images with an encoder the installed nac pretrained.
# Usage: install_example.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pc=$(find "$tmp/prefix" -name nacvae.pc)
libdir=$(dirname "$(dirname "$pc")")
export PKG_CONFIG_PATH="$(dirname "$pc")"
cc -std=c17 -Wall -Wextra -Werror "$src/examples/embed.c" $(pkg-config --cflags --libs nacvae) -lz \
    -Wl,-rpath,"$libdir" -o "$tmp/embed"
"$tmp/prefix/bin/nac" pretrain data.per_class=10 train.batch=50 train.epochs=1 \
    model.width_mult=0.0625 train.knn_every=0 train.stats_subset=50 optim.warmup_epochs=0 \
    train.threads=1 train.workers=1 run.dir="$tmp/runs" run.name=e >/dev/null
out=$("$tmp/embed" "$tmp/runs/e/encoder.safetensors" \
    /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz 3)
echo "$out"
echo "$out" | grep -q "1x28x28 images -> 32 features, 128-bit codes" || { echo "no info line"; exit 1; }
n=$(echo "$out" | grep -c '^image [0-9]: embedding \[.*\] code [0-9a-f]\{32\}$' || true)
[ "$n" = 3 ] || { echo "want 3 image lines, got $n"; exit 1; }
