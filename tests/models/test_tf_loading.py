"""TensorFlow's LLVM stays private: other libraries (Mesa's OpenGL) never bind to it."""

from __future__ import annotations

import subprocess
import sys

import pytest

# llvm::FixedVectorType::get(llvm::Type*, unsigned int): the call that crashed Mesa's
# glDrawArrays inside libtensorflow_framework.so.2 (see models/_tf.py).
LLVM_SYMBOL = "_ZN4llvm15FixedVectorType3getEPNS_4TypeEj"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF symbol scopes")
def test_tensorflows_llvm_symbols_are_not_in_the_global_scope() -> None:
    # A fresh interpreter: only what load_tensorflow loads is in it.
    code = (
        "import ctypes\n"
        "from napari_dlbio.models._tf import load_tensorflow\n"
        "tf = load_tensorflow()\n"
        "assert tf.constant(2.0).numpy() == 2.0\n"
        f"print(hasattr(ctypes.CDLL(None), {LLVM_SYMBOL!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # dlsym(RTLD_DEFAULT) searches the global scope, where Mesa's lazy bindings look first.
    assert result.stdout.strip() == "False"
