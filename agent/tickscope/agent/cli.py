"""`tickscope run | check-config | config-reference | version | top | doctor`.

Exit codes: 0 success, 1 an unexpected failure, 2 a configuration or startup
problem (the message says what to change).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from tickscope.agent.config import (
    DEFAULT_MAX_CONFIG_BYTES,
    DEFAULT_MAX_CONFIG_DEPTH,
    Config,
    ConfigError,
    load_config,
)
from tickscope.agent.logs import setup_logging
from tickscope.agent.version import __version__
from tickscope.core.errors import StartupError

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

log = logging.getLogger("tickscope")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


def _config_bounds(command: argparse.ArgumentParser) -> None:
    # The bounds on the config file itself: they cannot be settings in the file.
    command.add_argument(
        "--config-max-bytes",
        type=_positive,
        default=DEFAULT_MAX_CONFIG_BYTES,
        metavar="N",
        help="refuse a config file larger than this (default: %(default)s, 1 MiB)",
    )
    command.add_argument(
        "--config-max-depth",
        type=_positive,
        default=DEFAULT_MAX_CONFIG_DEPTH,
        metavar="N",
        help="refuse YAML or env JSON nested deeper than this (default: %(default)s)",
    )


# The sidecar's own commands: none of them needs the operator tools' parsers.
_SIDECAR_COMMANDS = frozenset({"run", "check-config", "config-reference", "version"})


def _parser(tools: bool = True) -> argparse.ArgumentParser:
    """The command line; without `tools`, no `doctor` and `top` subcommands."""
    parser = argparse.ArgumentParser(
        prog="tickscope",
        description="Observability sidecar for trading engines.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the sidecar until SIGTERM/SIGINT")
    run.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        default=os.environ.get("TICKSCOPE_CONFIG"),
        help="YAML config file (default: $TICKSCOPE_CONFIG, else built-in defaults)",
    )
    run.add_argument("--log-format", choices=["json", "text"], help="overrides logging.format")
    run.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="overrides logging.level"
    )
    # The flag Prometheus exporters share (exporter-toolkit), so that a node_exporter
    # command line's TLS and basic-auth setup carries over unchanged.
    run.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="TLS and basic-auth config for the admin port (overrides server.web_config_file)",
    )
    _config_bounds(run)

    check = sub.add_parser(
        "check-config", help="validate a config file (with TICKSCOPE_* env overrides) and exit"
    )
    check.add_argument("file", metavar="FILE", nargs="?", default=None)
    check.add_argument(
        "--print", action="store_true", help="print the effective config as YAML when valid"
    )
    _config_bounds(check)

    sub.add_parser("config-reference", help="print the configuration reference (Markdown)")
    sub.add_parser("version", help="print the version")
    if tools:
        # Operator tools: each module adds its subcommand. Imported only when the
        # command may be one of them (or for help and errors, which list them all):
        # doctor, top, topdata and httpclient are ~2.5 MiB of a sidecar's RSS.
        from tickscope.agent import doctor, top

        doctor.add_parser(sub)
        top.add_parser(sub)
    return parser


def _report(problems: Sequence[str], source: str | None) -> None:
    where = f" in {source}" if source else ""
    noun = "problem" if len(problems) == 1 else "problems"
    print(f"tickscope: invalid configuration{where} ({len(problems)} {noun}):", file=sys.stderr)
    for line in problems:
        print(f"  {line}", file=sys.stderr)


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(
            args.file, max_bytes=args.config_max_bytes, max_depth=args.config_max_depth
        )
    except ConfigError as exc:
        _report(exc.problems, args.file)
        return EXIT_CONFIG
    if args.print:
        import yaml

        print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
    else:
        print(f"{args.file or 'defaults'}: OK")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    try:
        config = load_config(
            args.config, max_bytes=args.config_max_bytes, max_depth=args.config_max_depth
        )
    except ConfigError as exc:
        # Logging is not set up yet (its config is among what failed): plain stderr.
        _report(exc.problems, args.config)
        return EXIT_CONFIG
    overrides = {
        k: v for k, v in (("format", args.log_format), ("level", args.log_level)) if v is not None
    }
    if overrides:
        config = config.model_copy(update={"logging": config.logging.model_copy(update=overrides)})
    if args.web_config_file is not None:
        # Validated as the config key is (the file loads, its certificates too), so a
        # bad file given on the command line is the same one-line error and exit 2.
        try:
            server = type(config.server).model_validate(
                {**config.server.model_dump(), "web_config_file": Path(args.web_config_file)}
            )
        except ValidationError as exc:
            message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            print(f"tickscope: --web.config.file: {message}", file=sys.stderr)
            return EXIT_CONFIG
        config = config.model_copy(update={"server": server})
    setup_logging(config.logging)
    return _serve(config)


def _serve(config: Config) -> int:
    from tickscope.agent.app import Sidecar

    try:
        sidecar = Sidecar(config)
        asyncio.run(sidecar.serve())
    except StartupError as exc:
        log.error(str(exc))
        return EXIT_CONFIG
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        return EXIT_OK
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The top-level parser has no options but -h: when the first word is one of the
    # sidecar's commands, argparse hands everything after it to that command's parser.
    args = _parser(tools=not argv or argv[0] not in _SIDECAR_COMMANDS).parse_args(argv)
    if args.command == "version":
        print(f"tickscope {__version__}")
        return EXIT_OK
    if args.command == "check-config":
        return _check_config(args)
    if args.command == "doctor":
        from tickscope.agent import doctor

        return doctor.run(args)
    if args.command == "top":
        from tickscope.agent import top

        return top.run(args)
    if args.command == "config-reference":
        from tickscope.agent.configdoc import reference

        print(reference(), end="")
        return EXIT_OK
    return _run(args)
