#!/usr/bin/env bash
# Install the Debian tools the tests need (real SIP clients, audio tools, a browser).
# Runs as root only (CI runs as root); otherwise it lists what is missing and leaves it to the user.
set -euo pipefail
list="$(dirname "$0")/system-packages.txt"
missing=()
while read -r bin pkg; do
  [[ -z "${bin}" || "${bin}" == \#* ]] && continue
  if [[ "${bin}" == lib:* ]]; then
    ldconfig -p | grep -qF "${bin#lib:} " || missing+=("${pkg}")
  else
    command -v "${bin}" >/dev/null 2>&1 || missing+=("${pkg}")
  fi
done < "${list}"
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ "$(id -u)" -ne 0 ]]; then
  echo "install-system-deps: not root; please install: ${missing[*]}" >&2
  exit 0
fi
echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
