#!/usr/bin/env bash
# Prepares, on the CPU machine, what a device run carries (see tools/device/h200.sh), in .tools/device/:
#   deno.xz                 Deno 2.9.6 for linux x64, compressed (the device machine has no Deno, no network)
#   bench.js, pretrain.js   tasks/bench.ts and tasks/pretrain.ts bundled (re-run this after every change)
#   *.wasm                  the image codecs' wasm, which the bundles load from beside themselves
# and .gl/*.deb, the Vulkan/EGL loaders (the device machine has the NVIDIA driver, not the loaders).
# Then `run` with carry [".tools/device", ".gl"] and `bash tools/device/h200.sh STAGE`.
set -euo pipefail
cd "$(dirname "$0")/../.."
d=.tools/device
mkdir -p $d
if [ ! -s $d/deno.xz ]; then
  npm install --prefix .tools deno@2.9.6 >/dev/null
  xz -T1 -6 -c .tools/node_modules/@deno/linux-x64-glibc/deno > $d/deno.xz
fi
deno bundle --platform deno tasks/bench.ts -o $d/bench.js
deno bundle --platform deno tasks/pretrain.ts -o $d/pretrain.js
deno cache tasks/pretrain.ts >/dev/null
for w in @jsquash+jpeg@1.6.0/node_modules/@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm \
  @jsquash+png@3.1.1/node_modules/@jsquash/png/codec/pkg/squoosh_png_bg.wasm; do
  cp "node_modules/.deno/$w" $d/
done
if ! ls .gl/*.deb >/dev/null 2>&1; then
  grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo /.gl/ >> .git/info/exclude
  mkdir -p .gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  # shellcheck disable=SC2086
  apt-get $o update >/dev/null
  # shellcheck disable=SC2086
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null)
fi
ls -la $d .gl/*.deb
