"""Build hook: generate gRPC code from protos/ before packaging (also for ``pip install -e .``)."""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithProtos(build_py):
    def run(self):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from vaner.protogen import generate

        generate()
        super().run()


setup(cmdclass={"build_py": BuildWithProtos})
