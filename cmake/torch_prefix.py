"""Prints the CMake prefix of the torch that this Python's environment holds.

`import torch` answers in the project's virtual environment. Inside pip's isolated build
environment (`pip install .`) torch is not importable, yet the interpreter is the one of the
environment being installed into: its site-packages hold the torch that dhess must be built
against, the one that will run beside it.
"""
import os
import site
import sys
import sysconfig

try:
    import torch
    print(torch.utils.cmake_prefix_path)
    sys.exit(0)
except ImportError:
    pass

places = [sysconfig.get_paths()[key] for key in ("purelib", "platlib")]
if site.ENABLE_USER_SITE:
    places.append(site.getusersitepackages())
for place in places:
    prefix = os.path.join(place, "torch", "share", "cmake")
    if os.path.isfile(os.path.join(prefix, "Torch", "TorchConfig.cmake")):
        print(prefix)
        sys.exit(0)
sys.exit(f"no torch in {sys.executable}'s environment (looked in {', '.join(dict.fromkeys(places))}): "
         "install torch 2.x into it first (pip install torch)")
