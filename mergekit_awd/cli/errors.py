"""How the commands that write turn failures into one error line (and exit code 1).

``MergekitAwdError`` carries its own message; other errors from a run (bad tensors, a full disk)
are named with their type; interrupts say what happened to OUT: before the swap it is left as it
was (staged output), during the swap the new output completed first.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import click

from mergekit_awd.errors import MergekitAwdError
from mergekit_awd.pipeline.staging import InterruptedAfterSwap


@contextmanager
def command_errors(command: str, out_path: Optional[str], finished: str, verbose: bool = False,
                   traceback_hint: str = "") -> Iterator[None]:
    """Turn what the block raises into ``click.ClickException``; ``verbose`` re-raises plain errors.

    command: "merge", "compress", … (for "merge interrupted"); finished: what OUT holds after an
    interrupt during the swap ("the merge", "the adapters").
    """
    left = f"{out_path} was left as it was" if out_path else "nothing was written"
    try:
        yield
    except MergekitAwdError as error:
        raise click.ClickException(str(error)) from None
    except (ValueError, RuntimeError, OSError, KeyError) as error:
        if verbose:
            raise
        raise click.ClickException(
            f"{type(error).__name__}: {error} ({left}{traceback_hint})"
        ) from None
    except InterruptedAfterSwap as error:
        raise click.ClickException(f"interrupted after {finished} finished: {error}") from None
    except KeyboardInterrupt as error:
        raise click.ClickException(
            f"{command} interrupted ({str(error) or 'Ctrl-C'}); {left}"
            + (" and the partial output removed" if out_path else "")
        ) from None
