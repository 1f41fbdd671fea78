"""The entry point: parse, run the command, and turn every error a user can act on into one line
per problem on stderr and a non-zero exit code, never a traceback."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..config_file import ConfigFileError
from ..data.problems import DataError, SkippableDataError
from ..files import WriteError
from ..resume import RunExists
from ..rundir import LAST, RunDirError
from ..training.distributed import launched_rank
from ..training.stop import TrainingStopped
from .commands import COMMANDS, EXIT_DATA, EXIT_ERROR, EXIT_INTERRUPTED, resume_command
from .flags import as_flags
from .parser import build_parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    started = time.perf_counter()
    try:
        return COMMANDS[args.command](args)
    except TrainingStopped as exc:
        rank = launched_rank()
        if rank is None:
            print(f"pixelwise train: {exc}\ncontinue with: {resume_command(args)}", file=sys.stderr)
        elif rank == 0:  # under torchrun the launcher (or the user's own torchrun line) knows the full command
            print(f"pixelwise train: {exc}; rerun the same launch with --resume to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DataError as exc:
        if launched_rank() not in (None, 0):  # under torchrun every rank finds the same problems: list them once
            return EXIT_DATA
        for problem in exc.problems:
            print(f"pixelwise {args.command}: {as_flags(str(problem))}", file=sys.stderr)
        if isinstance(exc, SkippableDataError):  # only where skipping the bad pairs would leave valid ones
            print(f"pixelwise {args.command}: {len(exc.problems)} problem(s) in the data; fix them or pass "
                  "--skip-invalid to use the valid pairs only", file=sys.stderr)
        return EXIT_DATA
    except WriteError as exc:  # a full disk, say: the files written before are intact
        hint = ""
        if args.command == "train" and (Path(args.out) / LAST).exists() and launched_rank() is None:
            hint = (f"; the run is intact up to its last saved step; once the file can be written, continue with: "
                    f"{resume_command(args)}")
        print(f"pixelwise {args.command}: error: {as_flags(str(exc))}{hint}", file=sys.stderr)
        return EXIT_ERROR
    except RunExists as exc:
        print(f"pixelwise {args.command}: error: {exc.run_dir}: already holds a run; use --resume to continue it or "
              "choose another --out", file=sys.stderr)
        return EXIT_ERROR
    except ConfigFileError as exc:  # names the file's own keys (train.lr), not flags
        print(f"pixelwise {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, FileNotFoundError, RunDirError, FloatingPointError, OSError) as exc:
        print(f"pixelwise {args.command}: error: {as_flags(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except MemoryError:
        print(f"pixelwise {args.command}: error: out of memory; try a smaller --batch-size or --size", file=sys.stderr)
        return EXIT_ERROR
    except RuntimeError as exc:  # torch reports out-of-memory and backend failures this way
        print(f"pixelwise {args.command}: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        hint = ""
        if args.command == "train" and (Path(args.out) / LAST).exists():
            hint = f"; finished epochs are saved in {args.out}: continue with {resume_command(args)}"
        print(f"\npixelwise {args.command}: interrupted after {time.perf_counter() - started:.0f} s{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
