"""The `novagen` command line: a thin layer over the Python API, one module per command or group of
commands (`transforms`: show, verify, export, catalog; `search`; `kernels`: generate, hls-sim;
`hardware`; `bench`; `tune`; `accuracy`), with the tables in `tables` and figures in `plots`.

Tables by default, `--json` for machines.  Exit status: 0 success, 1 a check that ran and failed,
2 bad input (one line on stderr, never a traceback).
"""

from __future__ import annotations

import sys

import typer

from novagen.cli import accuracy, bench, hardware, kernels, search, transforms, tune
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
                      ("generate", kernels.generate), ("hls-sim", kernels.hls_sim),
                      ("hardware", hardware.hardware_cmd), ("bench", bench.bench), ("tune", tune.tune_cmd),
                      ("accuracy", accuracy.accuracy_cmd)):
    app.command(name)(command)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit status (novagen's errors become one line on stderr)."""
    try:
        app(args=argv, prog_name="novagen")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except NovagenError as exc:
        sys.stderr.write(f"novagen: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("novagen: interrupted\n")
        return 130
    return 0


def main() -> None:
    sys.exit(run())
