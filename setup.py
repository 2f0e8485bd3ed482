"""Builds the optional compiled receive loop; everything else is in pyproject.toml.

The extension is optional twice over: without Cython it is not even attempted, and a
failing compiler only warns (``optional=True``). stageflow then reads with its
pure-Python loop.
"""

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:
    extensions = []
else:
    extensions = cythonize(
        [Extension("stageflow.transport._recvloop", ["stageflow/transport/_recvloop.pyx"])],
        quiet=True,
    )
    for extension in extensions:
        # Set after cythonize, which does not carry the flag over.
        extension.optional = True

setup(ext_modules=extensions)
