"""The program the ``unit_tests`` reward runs in the sandbox (as ``main.py``; not imported by rlft).

It runs the completion's code (``solution.py``) as ``__main__``, then each test in the same
namespace, and reports every outcome on stdout as a line ``NONCE pass I`` / ``NONCE fail I``,
then ``NONCE done``. The nonce is read from a file that is deleted before the completion's code
runs, so the completion cannot print a result line of its own: a program that exits early
(``sys.exit(0)``), prints "OK" or kills itself before its tests ran reports nothing, and nothing
counts as passed. Only the standard library, and Python 3.6 syntax: it runs on the sandbox's
interpreter, whatever its version.
"""

import json
import os
import sys
import traceback


def main():
    with open("rlft_nonce") as f:
        nonce = f.read().strip()
    os.unlink("rlft_nonce")
    with open("rlft_tests.json") as f:
        spec = json.load(f)
    os.unlink("rlft_tests.json")  # the tests are not the program's to read
    write, out = os.write, os.dup(1)

    def report(what):
        sys.stdout.flush()
        write(out, f"\n{nonce} {what}\n".encode())

    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    with open("solution.py") as f:
        source = f.read()
    exec(compile(source, "solution.py", "exec"), namespace)  # an exception ends the program: no test ran
    entry_point = spec.get("entry_point")
    for i, test in enumerate(spec["tests"]):
        try:
            exec(compile(test, f"test_{i}", "exec"), namespace)
            if entry_point and callable(namespace.get("check")):  # HumanEval: check(candidate)
                namespace["check"](namespace[entry_point])
        except BaseException:  # SystemExit too: a test that exits did not pass
            traceback.print_exc()
            report(f"fail {i}")
        else:
            report(f"pass {i}")
    report("done")


main()
