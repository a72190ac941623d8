#!/usr/bin/env bash
# Prepares, on the CPU machine, what a device run carries (see tools/device/h200.sh):
#   .tools/deno.xz   Deno 2.9.6 for linux x64, compressed (the device machine has no Deno and no network)
#   .tools/bench.js  tasks/bench.ts bundled (re-run this script after every change to the code)
#   .gl/*.deb        the Vulkan/EGL loaders (the device machine has the NVIDIA driver, not the loaders)
# Then `run` with carry [".tools/deno.xz", ".tools/bench.js", ".gl"] and `bash tools/device/h200.sh STAGE`.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .tools
if [ ! -s .tools/deno.xz ]; then
  npm install --prefix .tools deno@2.9.6 >/dev/null
  xz -T1 -6 -c .tools/node_modules/@deno/linux-x64-glibc/deno > .tools/deno.xz
fi
deno bundle --platform deno tasks/bench.ts -o .tools/bench.js
if ! ls .gl/*.deb >/dev/null 2>&1; then
  grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo /.gl/ >> .git/info/exclude
  mkdir -p .gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  # shellcheck disable=SC2086
  apt-get $o update >/dev/null
  # shellcheck disable=SC2086
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null)
fi
ls -la .tools/deno.xz .tools/bench.js .gl/*.deb
