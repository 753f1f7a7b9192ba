"""Models: what a name resolves to, how it loads, and the checkpoints training writes.

    resolve.py            a model name -> a local checkpoint (built-ins, directories, hub ids); device and dtype
    load.py               a checkpoint's tokenizer and base model (classifier or causal LM, 4-bit NF4)
    checkpoints.py        saved adapter directories: written, read, tied to their base by fingerprint
    checkpoint_files.py   checks on a checkpoint's files (a cut or corrupt file: one error naming it)
    kvcache.py            the KV-cache argument across transformers versions
"""
