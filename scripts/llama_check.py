"""Does this machine's llama-cpp-python build run the packaged model? Exit 0 when it decodes a prompt.

scripts/install.sh runs this in its own process after pip builds llama-cpp-python, because a build can load
and still crash the process on its first real prompt: built natively on an AMX Xeon, 0.3.36 segfaults in
``decode`` on any prompt longer than one token, while CI's machine lost its llama.cpp server with the
same source built ``GGML_NATIVE=OFF``, where the native build had passed. A crash here makes the installer
rebuild with the next set of flags instead of leaving every chat to fail later.
"""

from __future__ import annotations

import sys

from ragbus.servers.llm import find_smollm2_gguf


def main() -> int:
    from llama_cpp import Llama

    # as the server runs it: default threads and batch, a chat prompt of a few dozen tokens
    llm = Llama(model_path=str(find_smollm2_gguf()), n_ctx=512, verbose=False)
    question = "Using only the sources, answer in one sentence. Source [1]: The lighthouse at the harbour " \
               "entrance is 42 metres tall and was built in 1871. Question: how tall is the lighthouse?"
    out = llm.create_chat_completion([{"role": "user", "content": question}], max_tokens=8, temperature=0)
    text = out["choices"][0]["message"]["content"]
    tokens = out["usage"]["completion_tokens"]
    if tokens < 1:
        print(f"llama-cpp-python ran but produced no tokens: {out!r}", file=sys.stderr)
        return 1
    print(f"llama-cpp-python works here: {tokens} tokens ({text!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
