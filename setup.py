"""Build netpoll: the pure package, plus Cython-compiled hot modules where a C compiler exists.

The project metadata lives in pyproject.toml; this file only declares the
optional extension modules (gevent's way: ordinary ``.py`` modules compiled by
Cython, typed where it pays by an augmenting ``.pxd`` beside the ``.py``).

* ``NETPOLL_PURE_PYTHON=1`` (at build time): compile nothing.
* Cython missing, no C compiler, no Python headers, a compile error: the
  failure is printed, the module stays pure, and the install succeeds.

Whatever happened is written to ``netpoll/_build_info.json`` in the built
package, which ``netpoll info`` reads to say which build runs and why.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import sysconfig
import traceback

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
_build = runpy.run_path(os.path.join(HERE, "netpoll", "_build.py"))
COMPILED_MODULES: tuple[str, ...] = _build["COMPILED_MODULES"]
INFO_FILE: str = _build["INFO_FILE"]
ENV_PURE: str = _build["ENV_PURE"]
source_hash = _build["source_hash"]

#: Compiled code keeps Python's semantics: annotations are not C types (an
#: ``int`` or ``float`` annotation would otherwise reject or convert values the
#: pure module accepts); C types come only from the augmenting .pxd files.
DIRECTIVES = {
    "language_level": "3",
    "annotation_typing": False,
    "binding": True,
    "embedsignature": True,
}


def _source(module: str) -> str:
    return os.path.join(*module.split(".")) + ".py"


def _pure_reason() -> str | None:
    """Why nothing is compiled, decided before compiling (None: try to compile)."""
    if _build["pure_requested"]():
        return f"{ENV_PURE}=1 at build time: the pure-Python modules were installed"
    if sys.implementation.name != "cpython":
        return f"{sys.implementation.name} runs the pure-Python modules (no CPython C API)"
    try:
        import Cython  # noqa: F401
    except ImportError:
        return "Cython was not available at build time: the pure-Python modules were installed"
    return None


PURE_REASON = _pure_reason()


def _extensions() -> list:
    global PURE_REASON
    if PURE_REASON is not None:
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    exts = [Extension(name, [_source(name)]) for name in COMPILED_MODULES]
    try:
        return cythonize(
            exts,
            compiler_directives=DIRECTIVES,
            build_dir=os.path.join("build", "cython"),
            quiet=True,
        )
    except Exception:  # a Cython error in a module: install pure, and say why
        traceback.print_exc()
        PURE_REASON = "Cython could not translate the hot modules (see the build log)"
        return []


def _write_info(directory: str, info: dict) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, INFO_FILE), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")


def _cython_version() -> str | None:
    try:
        import Cython
    except ImportError:
        return None
    return str(Cython.__version__)


class BuildPy(build_py):
    """Also writes the build record for a pure build (build_ext overwrites it when it runs)."""

    def run(self) -> None:
        super().run()
        if PURE_REASON is not None or not self.distribution.ext_modules:
            info = {"compiled": [], "failed": {}, "reason": PURE_REASON, "sources": {}}
            _write_info(os.path.join(self.build_lib, "netpoll"), info)


class OptionalBuildExt(build_ext):
    """build_ext that never fails the install: a module that does not compile stays pure."""

    def run(self) -> None:
        self.compiled: list[str] = []
        self.failed: dict[str, str] = {}
        try:
            super().run()
        except Exception as exc:  # no compiler at all (DistutilsPlatformError) and the like
            self._report("all hot modules", exc)
            for ext in self.extensions:
                self.failed.setdefault(ext.name, f"{type(exc).__name__}: {exc}")
        self._record()

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:  # CompileError, missing Python.h, missing gcc (OSError)
            self._report(ext.name, exc)
            self.failed[ext.name] = f"{type(exc).__name__}: {exc}"
            # A half-written extension must not shadow the pure module.
            target = self.get_ext_fullpath(ext.name)
            if os.path.exists(target):
                os.unlink(target)
        else:
            self.compiled.append(ext.name)

    @staticmethod
    def _report(what: str, exc: BaseException) -> None:
        bar = "*" * 72
        print(
            f"\n{bar}\nnetpoll: could not compile {what} ({type(exc).__name__}: {exc}).\n"
            "netpoll installs its pure-Python modules instead: it works the same, only slower.\n"
            f"(Install a C compiler and the Python headers, e.g. apt-get install gcc "
            f"python3-dev, and reinstall for the compiled build.)\n{bar}\n",
            file=sys.stderr,
        )

    def _record(self) -> None:
        if self.failed and not self.compiled:
            reason = "the C build failed at install time (" + next(iter(self.failed.values()))
            reason += "): the pure-Python modules were installed"
        elif self.failed:
            reason = "some hot modules failed to compile: " + ", ".join(sorted(self.failed))
        else:
            reason = None
        info = {
            "compiled": sorted(self.compiled),
            "failed": self.failed,
            "reason": reason,
            "cython": _cython_version(),
            "python": sysconfig.get_python_version(),
            "sources": {
                name: source_hash(os.path.join(HERE, _source(name))) for name in self.compiled
            },
        }
        # Beside netpoll/__init__: in build_lib for a wheel, in the source tree
        # for an in-place (editable) build.
        _write_info(os.path.dirname(self.get_ext_fullpath("netpoll._build_info")), info)


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPy},
)
