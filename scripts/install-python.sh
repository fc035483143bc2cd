#!/usr/bin/env bash
# Makes `import dhess` work for Debian's Python with torch (/usr/bin/python3, or $DHESS_PYTHON)
# from any directory: a dhess.pth file naming this checkout's python/ folder, in the first
# site-packages that Python reads (/usr/local/lib/python3.X/dist-packages as root, the user's
# site-packages otherwise). Idempotent, no network: rewrites the file only when it differs.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${DHESS_PYTHON:-/usr/bin/python3}
package_root=$(pwd)/python

if [ "$(id -u)" -eq 0 ]; then
  site=$("$python" -c 'import site; print(site.getsitepackages()[0])')
else
  site=$("$python" -c 'import site; print(site.getusersitepackages())')
fi
pth="$site/dhess.pth"

if [ "$(cat "$pth" 2>/dev/null)" != "$package_root" ]; then
  mkdir -p "$site"
  printf '%s\n' "$package_root" >"$pth"
  echo "dhess: $pth -> $package_root"
fi

(cd / && "$python" -c 'import dhess') || { echo "dhess: $python still cannot import dhess (see $pth)" >&2; exit 1; }
