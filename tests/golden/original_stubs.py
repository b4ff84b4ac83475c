"""Stand-ins for heavy packages the originals import but the golden builders never run.

Installed (by ``originals_env.sh``) into the throwaway virtual environment that builds the
fixtures, never into snngen's own: ``torchvision`` would pull CUDA wheels, and braincog imports it
(and timm, dv, pandas, seaborn) at import time for data sets and model zoos the builders do not
use. Any attribute of a stubbed module is a dummy class; using one for real fails loudly.
"""
import importlib.abc
import importlib.machinery
import sys
import types

STUBBED = ("torchvision", "timm", "dv", "seaborn", "pandas")


class _Dummy:
    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        if len(a) == 1 and callable(a[0]) and not k:
            return a[0]  # decorator use (e.g. timm's register_model)
        return _Dummy()

    def __getattr__(self, name):
        return _Dummy()


class _StubModule(types.ModuleType):
    __path__: list = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Dummy


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in STUBBED:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []


sys.meta_path.insert(0, _Finder())
