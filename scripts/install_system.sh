#!/usr/bin/env bash
# Install the Debian packages the workflow needs, only when missing (seconds when present).
set -euo pipefail
need=()
command -v festival >/dev/null || need+=(festival)
[ -d /usr/share/festival/voices/english/kal_diphone ] || need+=(festvox-kallpc16k)
[ -d /usr/share/festival/voices/english/ked_diphone ] || need+=(festvox-kdlpc16k)
[ -d /usr/share/festival/voices/us/cmu_us_slt_arctic_hts ] || need+=(festvox-us-slt-hts)
command -v sox >/dev/null || need+=(sox)
[ -e /usr/lib/x86_64-linux-gnu/sox/libsox_fmt_all.so ] || dpkg -s libsox-fmt-all >/dev/null 2>&1 || need+=(libsox-fmt-all)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "installing system packages: ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
