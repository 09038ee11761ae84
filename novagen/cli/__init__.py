"""The `novagen` command line: a thin layer over the Python API, one module per command or group of
commands (`transforms`: show, verify, export, catalog; `search`; `kernels`: generate, hls-sim, rtl-sim;
`hardware`; `bench`; `tune`: tune, tune-model; `accuracy`; `lowprec`: calibrate, finetune), with the
tables in `tables` and figures in `plots`.

Tables by default, `--json` for machines.  Exit status: 0 success, 1 a check that ran and failed,
2 bad input (one line on stderr, never a traceback).
"""

from __future__ import annotations

import contextlib
import os
import sys

import typer

from novagen import interrupts
from novagen.cli import accuracy, bench, hardware, kernels, lowprec, search, transforms, tune
from novagen.errors import NovagenError

app = typer.Typer(
    name="novagen",
    help="Well-conditioned Winograd convolution transforms: search, verify, export, and kernels that run them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for name, command in (("show", transforms.show), ("verify", transforms.verify_cmd), ("search", search.search_cmd),
                      ("export", transforms.export_cmd), ("catalog", transforms.catalog_cmd),
                      ("generate", kernels.generate), ("hls-sim", kernels.hls_sim), ("rtl-sim", kernels.rtl_sim_cmd),
                      ("hardware", hardware.hardware_cmd), ("bench", bench.bench), ("tune", tune.tune_cmd),
                      ("tune-model", tune.tune_model_cmd),
                      ("accuracy", accuracy.accuracy_cmd), ("calibrate", lowprec.calibrate_cmd),
                      ("finetune", lowprec.finetune_cmd)):
    app.command(name)(command)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status: 0 success, 1 a check that ran and failed, 2 bad input (usage
    errors included), 3 a build of generated code failed, 130 interrupted, 141 output pipe closed; every
    error is one line on stderr, never a traceback."""
    try:
        code = interrupts.run_interruptibly(lambda: app(args=argv, prog_name="novagen", standalone_mode=False))
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return _fail("interrupted", interrupts.INTERRUPTED)
    except typer.TyperException as exc:
        return _fail(" ".join(exc.format_message().split()), 2)
    except NovagenError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted", interrupts.INTERRUPTED)
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else " the output"
        return _fail(f"cannot write{where}: {exc.strerror or exc}", 2)
    return code if isinstance(code, int) else 0


def _fail(message: str, code: int) -> int:
    try:
        sys.stderr.write(f"novagen: {'error: ' if code != interrupts.INTERRUPTED else ''}{message}\n")
        sys.stderr.flush()
    except OSError:
        pass
    return code


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so that the interpreter's final flush stays quiet."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main() -> None:
    code = run()
    try:
        sys.stdout.flush()  # a redirected stdout is block-buffered: the last write can fail only here
    except BrokenPipeError:
        _quiet_stdout()
        code = code or 141
    except OSError as exc:
        _quiet_stdout()
        code = code or _fail(f"cannot write the output: {exc.strerror or exc}", 2)
    sys.exit(code)
