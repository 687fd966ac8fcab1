#!/usr/bin/env bash
# Install what nacvae needs on Debian 12 (as root, or with sudo): only the packages missing.
set -euo pipefail
pkgs=(cmake make gcc pkg-config libdnnl-dev libcjson-dev libcmocka-dev zlib1g-dev libpng-dev libcairo2-dev
      openmpi-bin libopenmpi-dev)
pkgs+=("$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
