"""Find a Python interpreter that has the modules an analysis script imports, and switch to it.

The `python3` first on PATH may be a separate interpreter without Debian's packages; Debian's
/usr/bin/python3 has python3-h5py, python3-numpy and python3-matplotlib once they are installed.
Standard library only: this module runs before those imports.
"""
import importlib.util
import os
import shutil
import subprocess
import sys

DEBIAN_PACKAGES = {"h5py": "python3-h5py", "numpy": "python3-numpy", "matplotlib": "python3-matplotlib"}
_GUARD = "MOEBENCH_PYENV_REEXEC"


def _missing(modules):
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _candidates():
    seen = set()
    for c in (os.environ.get("MOEBENCH_PYTHON"), "/usr/bin/python3", shutil.which("python3"),
              "/usr/local/bin/python3", shutil.which("python")):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            real = os.path.realpath(c)
            if real not in seen:
                seen.add(real)
                yield c


def require(modules=("h5py", "numpy", "matplotlib"), missing_exit=2):
    """Return if this interpreter imports every module; else re-execute the script with one that
    does; else print which Debian packages to install and exit with `missing_exit`."""
    missing = _missing(modules)
    if not missing:
        return
    here = os.path.realpath(sys.executable)
    tried = [sys.executable]
    if not os.environ.get(_GUARD):
        probe = "import " + ", ".join(modules)
        for c in _candidates():
            if os.path.realpath(c) == here:
                continue
            tried.append(c)
            try:
                ok = subprocess.run([c, "-c", probe], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    timeout=60).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            if ok:
                env = dict(os.environ, **{_GUARD: "1"})
                sys.stdout.flush()
                os.execve(c, [c] + sys.argv, env)
    pkgs = " ".join(DEBIAN_PACKAGES.get(m, m) for m in modules)
    sys.stderr.write(
        "%s: error: needs the Python modules %s; %s missing in %s, and no other interpreter has them "
        "(tried: %s). Install Debian's packages: apt-get install %s (or set MOEBENCH_PYTHON to an interpreter "
        "that has them)\n" % (os.path.basename(sys.argv[0]), ", ".join(modules), ", ".join(missing), sys.executable,
                              ", ".join(tried), pkgs))
    sys.exit(missing_exit)
