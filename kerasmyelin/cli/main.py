"""The ``kerasmyelin`` command: one subcommand per stage of the pipeline."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from kerasmyelin import __version__
from kerasmyelin.cli import (
    calibrate_cmd,
    calibrate_synth_cmd,
    convert_dicom_cmd,
    doctor_cmd,
    evaluate_cmd,
    export_cmd,
    export_nnc_cmd,
    predict_cmd,
    pretrain_cmd,
    prepare_cmd,
    reproduce_cmd,
    shard_cmd,
    synth_cmd,
    train_cmd,
    trust_cmd,
    validate_cmd,
)
from kerasmyelin.errors import KerasMyelinError
from kerasmyelin.runtime import import_tensorflow_quietly

COMMANDS = (reproduce_cmd, pretrain_cmd, synth_cmd, prepare_cmd, shard_cmd, convert_dicom_cmd, export_nnc_cmd, validate_cmd,
            calibrate_synth_cmd,
            train_cmd, evaluate_cmd, predict_cmd, calibrate_cmd, export_cmd, trust_cmd, doctor_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kerasmyelin",
        description="Estimate infant myelination age from T1w and T2w MRI (after Wada et al. 2019).",
        epilog="Run 'kerasmyelin COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"kerasmyelin {__version__}")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="how much to log (default: WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS:
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP, epilog=module.EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    # TensorFlow's C++ start-up notices (CPU features, oneDNN) are not for our users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    # Cross-validation builds a new model per network by design; TensorFlow's advice about
    # retracing is noise here.
    logging.getLogger("tensorflow").addFilter(
        lambda record: "triggered tf.function retracing" not in record.getMessage())
    if getattr(sys.modules[args.run.__module__], "USES_TENSORFLOW", True):
        import_tensorflow_quietly()
    previous = _interrupt_on_sigterm()
    try:
        return int(args.run(args) or 0)
    except KerasMyelinError as exc:
        print(f"kerasmyelin {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kerasmyelin {args.command}: interrupted; nothing was left half-written", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _interrupt_on_sigterm():
    """SIGTERM (a scheduler's time limit, ``kill``) unwinds like Ctrl-C, so outputs being built are
    cleaned up or kept for ``--resume``; returns the handler it replaced (None off the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
