"""Generation: sampling labelled synthetic examples from a trained generator.

    sample.py        sample N valid examples per label, batch by batch, resumably; `blindspot generate`
    decode.py        the prompt-cached decode loop of the native engine
    engines.py       the engines (native, vLLM) behind one interface, and `auto`'s choice
    vllm_engine.py   the vLLM engine (base + LoRA adapter)
    parsing.py       a generation's text -> a labelled pair, or why it was rejected
"""
