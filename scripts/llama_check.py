"""Does this machine's llama-cpp-python build run the packaged model? Exit 0 when it decodes a prompt.

scripts/install.sh runs this in its own process after pip builds llama-cpp-python, because a build can load
and still crash the process on its first real prompt: built natively on an AMX Xeon, 0.3.36 segfaults in
``decode`` on any prompt longer than one token, while the same source built with ``GGML_NATIVE=OFF``
failed on another machine where the native build works. A crash here makes the installer rebuild with the
next set of flags instead of leaving every chat to fail later.
"""

from __future__ import annotations

import sys

from ragbus.servers.llm import find_smollm2_gguf


def main() -> int:
    from llama_cpp import Llama

    llm = Llama(model_path=str(find_smollm2_gguf()), n_ctx=256, n_threads=1, verbose=False)
    out = llm.create_completion("The three primary colours are red, yellow and", max_tokens=4, temperature=0)
    text = out["choices"][0]["text"]
    tokens = out["usage"]["completion_tokens"]
    if tokens < 1:
        print(f"llama-cpp-python ran but produced no tokens: {out!r}", file=sys.stderr)
        return 1
    print(f"llama-cpp-python works here: {tokens} tokens ({text!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
