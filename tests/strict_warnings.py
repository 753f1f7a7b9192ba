"""Run the blindspot CLI and record every deprecation warning raised while our code is on the stack.

    python tests/strict_warnings.py OUT.json run configs/smoke.yaml --out runs/x

`warnings.filterwarnings("error", module="blindspot")` does not catch a library's deprecation
triggered by our call: transformers attributes it (stacklevel) to torch's Module.__call__ or to
its own wrappers, never to our frame. So this runner shows every DeprecationWarning and
FutureWarning ("always") and records, with the stack, each one raised while a frame of the
blindspot package is on the stack (every warning of a run is: the run is ours), into OUT.json.
The test asserts the list is empty. Installed after the CLI's own logging setup, so that the
warnings still reach run.log as well.
"""

from __future__ import annotations

import json
import sys
import traceback
import warnings
from pathlib import Path

import blindspot.cli as cli

RECORDED: list[dict] = []


def _our_frames() -> list[str]:
    """Our frames on the stack, innermost first; none when a library module's import raised the warning.

    A deprecation that a third-party module raises while it is being imported (torch.utils.mkldnn's
    `torch.jit.script_method`, reached through transformers' lazy imports) is not caused by how we
    call anything: an import frame lies between it and our innermost frame.
    """
    frames, f, importing = [], sys._getframe(2), False
    while f is not None:
        if f.f_globals.get("__name__", "").startswith("blindspot"):
            if importing and not frames:
                return []
            frames.append(f"{f.f_globals['__name__']}:{f.f_lineno} {f.f_code.co_name}")
        elif f.f_code.co_filename.startswith("<frozen importlib"):
            importing = True
        f = f.f_back
    return frames


def _install_hook() -> None:
    previous = warnings.showwarning

    def hook(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (DeprecationWarning, FutureWarning)):
            ours = _our_frames()
            if ours:
                RECORDED.append({"category": category.__name__, "message": str(message),
                                 "where": f"{filename}:{lineno}", "our_frames": ours,
                                 "stack": traceback.format_stack(limit=25)})
        previous(message, category, filename, lineno, file, line)

    warnings.showwarning = hook
    warnings.simplefilter("always", DeprecationWarning)
    warnings.simplefilter("always", FutureWarning)


def main() -> int:
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    setup = cli.setup_logging

    def setup_then_hook(verbosity: int) -> None:
        setup(verbosity)
        _install_hook()

    cli.setup_logging = setup_then_hook
    try:
        return cli.main(argv)
    finally:
        out.write_text(json.dumps(RECORDED, indent=1))


if __name__ == "__main__":
    sys.exit(main())
