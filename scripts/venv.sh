#!/usr/bin/env bash
# The project's Python: a virtual environment ($DHESS_VENV, default .venv in the checkout) with the
# pinned torch, numpy, h5py and matplotlib of requirements.txt, where `import dhess` finds this
# checkout's python/ folder. dhess builds against that torch's LibTorch, and the tests' oracles,
# the Python package and the bench run on that same torch. Reuses an existing environment; a second
# run installs nothing (and needs no network) while requirements.txt is unchanged. Prints the
# environment's python on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${DHESS_VENV:-$PWD/.venv}
base=${DHESS_BASE_PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  echo "dhess: creating the virtual environment $venv" >&2
  "$base" -m venv "$venv"
fi
python=$venv/bin/python

# requirements.txt as last installed: pip runs only when it changed (or never ran).
stamp=$venv/.dhess-requirements
if ! cmp -s requirements.txt "$stamp"; then
  echo "dhess: installing requirements.txt into $venv" >&2
  "$python" -m pip install --quiet --disable-pip-version-check -r requirements.txt >&2
  cp requirements.txt "$stamp"
fi

# `import dhess` from any directory: a .pth file naming this checkout's python/ folder.
site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
package_root=$PWD/python
if [ "$(cat "$site/dhess.pth" 2>/dev/null)" != "$package_root" ]; then
  printf '%s\n' "$package_root" >"$site/dhess.pth"
fi
(cd / && "$python" -c 'import dhess') || { echo "dhess: $python cannot import dhess (see $site/dhess.pth)" >&2; exit 1; }
echo "$python"
