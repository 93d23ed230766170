"""Builds rankme_fast._C by driving CMake (see CMakeLists.txt for the switches).

Environment: RANKME_FAST_CUDA=AUTO|ON|OFF, RANKME_FAST_BLAS=AUTO|ON|OFF,
RANKME_FAST_NATIVE_ARCH=ON|OFF, RANKME_FAST_CUDA_ARCHITECTURES (CMake's list, e.g. "90-real";
default: CMakeLists.txt's), RANKME_FAST_REQUIRE_EXTENSION=1 to make a failed native build an
error (otherwise the package installs without _C and falls back to the torch backend).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        try:
            self._cmake(ext)
        except (OSError, subprocess.CalledProcessError) as error:
            if os.environ.get("RANKME_FAST_REQUIRE_EXTENSION") == "1":
                raise
            print(f"WARNING: rankme_fast._C failed to build ({error}); installing the pure-Python "
                  "package, which uses the torch backend.", file=sys.stderr)

    def _cmake(self, ext: Extension) -> None:
        import pybind11

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_dir = Path(self.build_temp).resolve() / ext.name
        build_dir.mkdir(parents=True, exist_ok=True)
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            "-DCMAKE_BUILD_TYPE=Release",
        ]
        for switch in ("RANKME_FAST_CUDA", "RANKME_FAST_BLAS", "RANKME_FAST_NATIVE_ARCH"):
            if switch in os.environ:
                args.append(f"-D{switch}={os.environ[switch]}")
        if os.environ.get("RANKME_FAST_CUDA_ARCHITECTURES"):  # e.g. "90-real": one GPU's code, a faster build
            args.append(f"-DCMAKE_CUDA_ARCHITECTURES={os.environ['RANKME_FAST_CUDA_ARCHITECTURES']}")
        generator = ["-G", "Ninja"] if _has_ninja() else []
        cmake = _tool("cmake")
        subprocess.run([cmake, str(ROOT), *generator, *args], cwd=build_dir, check=True)
        jobs = str(os.cpu_count() or 2)
        subprocess.run([cmake, "--build", ".", "--parallel", jobs], cwd=build_dir, check=True)


def _tool(name: str) -> str:
    """The tool installed beside this interpreter (the pip wheels), else the one on PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or name


def _has_ninja() -> bool:
    try:
        subprocess.run([_tool("ninja"), "--version"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


setup(ext_modules=[CMakeExtension("rankme_fast._C")], cmdclass={"build_ext": CMakeBuild})
